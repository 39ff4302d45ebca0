"""Drive speech-gateway's OpenAI-compatible transcription API with OpenAI's official SDK.

Usage:
    openai_client.py --url http://HOST:PORT --key KEY --file FILE [--model NAME]
                     [--format json|text|srt|vtt|verbose_json] [--granularity word|segment]...
                     [--stream] [--prompt TEXT] [--models]

Calls `client.audio.transcriptions.create(...)` (`client.models.list()` with --models) with
`base_url` at the gateway and prints one JSON object: {"result": ...} with what the SDK
returned (a parsed model as a dict, a str for text/srt/vtt, the list of events when
streaming), or {"error": {"status": N, "body": ...}} when the SDK raised an API error.
"""

import argparse
import json

import openai
from openai import OpenAI


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--file")
    ap.add_argument("--model", default="default")
    ap.add_argument("--format", default=None)
    ap.add_argument("--granularity", action="append", default=[])
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--prompt", default=None)
    ap.add_argument("--models", action="store_true")
    args = ap.parse_args()

    client = OpenAI(base_url=args.url + "/v1", api_key=args.key, max_retries=0, timeout=120)
    try:
        if args.models:
            print(json.dumps({"result": [m.id for m in client.models.list()]}))
            return
        options = {"model": args.model}
        if args.format:
            options["response_format"] = args.format
        if args.granularity:
            options["timestamp_granularities"] = args.granularity
        if args.prompt:
            options["prompt"] = args.prompt
        with open(args.file, "rb") as f:
            if args.stream:
                events = client.audio.transcriptions.create(file=f, stream=True, **options)
                result = [e.model_dump() for e in events]
            else:
                out = client.audio.transcriptions.create(file=f, **options)
                result = out if isinstance(out, str) else out.model_dump()
    except openai.APIStatusError as e:
        try:
            body = e.response.json()
        except ValueError:
            body = e.response.text
        print(json.dumps({"error": {"status": e.status_code, "body": body}}))
        return
    print(json.dumps({"result": result, "type": type(out).__name__ if not args.stream else "stream"}))


if __name__ == "__main__":
    main()
