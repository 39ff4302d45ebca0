"""The golden clips through the OpenAI-compatible file endpoint, compared word for word
with what v1 streaming gives on the same route (golden/expected/<route>/<id>.txt, the
transcripts `sgw eval --write-expected` keeps).

Usage:
    openai_golden.py --url http://HOST:PORT [--key KEY] [--route default] [--tag ci]

Prints one line per clip (same / DIFFERENT, with both texts when they differ) and a last
line with the count; exits 1 if any clip differs.
"""

import argparse
import pathlib
import sys
import tomllib

from openai import OpenAI


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--key", default="unused")
    ap.add_argument("--route", default="default")
    ap.add_argument("--tag", default="ci")
    args = ap.parse_args()
    golden = pathlib.Path(__file__).resolve().parents[2] / "golden"
    manifest = tomllib.loads((golden / "manifest.toml").read_text())
    client = OpenAI(base_url=args.url + "/v1", api_key=args.key, max_retries=0, timeout=300)
    differ = 0
    clips = [c for c in manifest["clip"] if args.tag in c.get("tags", [])]
    for clip in clips:
        expected_file = golden / "expected" / args.route / f"{clip['id']}.txt"
        expected = expected_file.read_text().strip() if expected_file.exists() else ""
        with open(golden / clip["audio"], "rb") as f:
            got = client.audio.transcriptions.create(file=f, model=args.route).text.strip()
        same = got.split() == expected.split()
        differ += not same
        print(f"{clip['id']}: {'same' if same else 'DIFFERENT'}")
        if not same:
            print(f"  v1:   {expected}\n  file: {got}")
    print(f"{len(clips) - differ} of {len(clips)} clips the same as v1 streaming")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
