//! `sim-backend`: the zero-compute Riva / Triton back end ([`sgw_testkit::sim`]) as a
//! process, for the chaos suite, the load benchmarks and manual tests. A test tool, not a
//! recogniser.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{ArgGroup, Parser, ValueEnum};
use sgw_testkit::sim::{Behaviour, SimOptions};
use tokio_util::sync::CancellationToken;

const SIM_ABOUT: &str = "\
A TEST TOOL, NOT A RECOGNISER. A zero-compute back end that speaks Riva StreamingRecognize
(with gRPC health) and Triton ModelStreamInfer (a decoupled sequence model) on real gRPC, so
the gateway can be tested and loaded without a GPU. Its words come from the audio alone:

  marker audio (block k is +k,-k,+k,... ; see sgw_testkit::sim::marker) comes back as one
  word `wk` per block, timed by its samples: lost or duplicated audio shows in the words;
  any other audio gives one word per --word-ms of stream, cycling through --transcript
  (or a built-in sentence); quiet audio (every |sample| < 64) gives none.

A final every --final-words words and at the end of the stream. Prints one line per listener
(`riva listening on ADDR`, `triton listening on ADDR`; port 0 picks a free port) and runs until
SIGTERM or SIGINT. The behaviour is fixed for the life of the process: restart it to change it.";

#[derive(Parser)]
#[command(name = "sim-backend", version, about = "A TEST TOOL, NOT A RECOGNISER: a zero-compute back end speaking Riva and/or Triton streaming gRPC, whose words come from the audio's content", long_about = SIM_ABOUT)]
#[command(group(ArgGroup::new("listeners").required(true).multiple(true).args(["riva", "triton"])))]
struct SimArgs {
    /// Serve Riva (and gRPC health) on this address, e.g. 127.0.0.1:50051.
    #[arg(long, value_name = "ADDR")]
    riva: Option<SocketAddr>,
    /// Serve Triton (KServe v2) on this address, e.g. 127.0.0.1:8001.
    #[arg(long, value_name = "ADDR")]
    triton: Option<SocketAddr>,
    /// The Triton model served (decoupled, sequence batching).
    #[arg(long, default_value = "asr_stream")]
    triton_model: String,
    /// Sample rate of the Triton model's AUDIO input.
    #[arg(long, default_value_t = 16_000)]
    triton_sample_rate: u32,
    /// The model name Riva lists.
    #[arg(long, default_value = "sim-asr")]
    riva_model: String,
    /// How the process (mis)behaves, for its whole life.
    #[arg(long, value_enum, default_value_t = BehaviourArg::Normal)]
    behaviour: BehaviourArg,
    /// `slow`: added delay of every response.
    #[arg(long, value_parser = speech_gateway::config::parse_duration, default_value = "300ms")]
    delay: Duration,
    /// `fail-after`: stream audio after which a stream fails with UNAVAILABLE.
    #[arg(long, value_parser = speech_gateway::config::parse_duration, default_value = "2s")]
    fail_after: Duration,
    /// Stream time per word of transcript mode, in ms.
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u64).range(1..))]
    word_ms: u64,
    /// Words per final.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(1..))]
    final_words: u64,
    /// Transcript-mode words (whitespace-separated), used in turn.
    #[arg(long, value_name = "FILE")]
    transcript: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum BehaviourArg {
    /// Answer every request.
    Normal,
    /// Every call fails with UNAVAILABLE; health says not serving.
    Unavailable,
    /// Accept streams, read them, never answer; health says serving.
    Hang,
    /// Delay every response by --delay, in order.
    Slow,
    /// Fail each stream with UNAVAILABLE after --fail-after of its audio.
    FailAfter,
}

fn main() -> anyhow::Result<()> {
    let args = SimArgs::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(sim_backend(args))
}

async fn sim_backend(args: SimArgs) -> anyhow::Result<()> {
    let vocabulary = match &args.transcript {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let words: Vec<String> = text.split_whitespace().map(str::to_string).collect();
            anyhow::ensure!(!words.is_empty(), "{} holds no words", path.display());
            words
        }
        None => Vec::new(),
    };
    let options = SimOptions {
        behaviour: match args.behaviour {
            BehaviourArg::Normal => Behaviour::Normal,
            BehaviourArg::Unavailable => Behaviour::Unavailable,
            BehaviourArg::Hang => Behaviour::Hang,
            BehaviourArg::Slow => Behaviour::Slow(args.delay),
            BehaviourArg::FailAfter => Behaviour::FailAfter(args.fail_after),
        },
        word: Duration::from_millis(args.word_ms),
        final_words: args.final_words as usize,
        vocabulary,
        riva_model: args.riva_model,
        triton_model: args.triton_model,
        triton_sample_rate_hz: args.triton_sample_rate,
    };
    let stop = CancellationToken::new();
    let mut servers = tokio::task::JoinSet::new();
    for (name, addr) in [("riva", args.riva), ("triton", args.triton)] {
        let Some(addr) = addr else { continue };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        // One line per listener, with the real port: the parent process reads it.
        println!("{name} listening on {}", listener.local_addr()?);
        let (options, stop) = (options.clone(), stop.clone().cancelled_owned());
        servers.spawn(async move {
            let served = match name {
                "riva" => sgw_testkit::sim::serve_riva(listener, options, stop).await,
                _ => sgw_testkit::sim::serve_triton(listener, options, stop).await,
            };
            served.with_context(|| format!("{name} server failed"))
        });
    }
    tokio::select! {
        () = speech_gateway::shutdown_signal() => stop.cancel(),
        Some(done) = servers.join_next() => {
            stop.cancel();
            done??;
        }
    }
    while let Some(done) = servers.join_next().await {
        done??;
    }
    Ok(())
}
