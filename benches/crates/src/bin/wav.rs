//! hound against the WAV files our tools are given: `espeak-ng --stdout` (the golden
//! clips' generator) and `sox … -t wav -` write a placeholder data size, because they
//! cannot seek back on a pipe; the tools' reader (crates/tools/src/client/wav.rs) reads
//! such files to their end. Usage: wav FILE...

fn main() {
    for path in std::env::args().skip(1) {
        match hound::WavReader::open(&path) {
            Err(e) => println!("{path}: hound refuses it: {e}"),
            Ok(reader) => {
                let declared = reader.len();
                let (mut read, mut error) = (0u64, None);
                for s in reader.into_samples::<i16>() {
                    match s {
                        Ok(_) => read += 1,
                        Err(e) => {
                            error = Some(e.to_string());
                            break;
                        }
                    }
                }
                println!("{path}: hound: {declared} samples declared, {read} read, error: {error:?}");
            }
        }
    }
}
