//! Word error rate with a documented normaliser, for comparing transcripts with references.
//!
//! Normalisation (applied to both sides): lower case; `'` kept inside words, every other
//! character that is not a letter or digit becomes a space; digit runs 0–99 are spelled
//! out ("7" → "seven", "42" → "forty two"); then split on white space. WER is the word
//! Levenshtein distance (substitutions + deletions + insertions) over the reference's
//! word count; an empty reference scores 0 if the hypothesis is empty, else 1.

const ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];

fn spell(n: u32) -> String {
    match n {
        0..=19 => ONES[n as usize].to_string(),
        20..=99 if n.is_multiple_of(10) => TENS[(n / 10) as usize].to_string(),
        20..=99 => format!("{} {}", TENS[(n / 10) as usize], ONES[(n % 10) as usize]),
        _ => n.to_string(),
    }
}

/// The normalised words of `text`.
pub fn normalise(text: &str) -> Vec<String> {
    let lowered = text.to_lowercase();
    let mut cleaned = String::with_capacity(lowered.len());
    let chars: Vec<char> = lowered.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let inner_apostrophe = (c == '\'' || c == '’')
            && i > 0
            && chars[i - 1].is_alphanumeric()
            && chars.get(i + 1).is_some_and(|n| n.is_alphanumeric());
        if c.is_alphanumeric() {
            cleaned.push(c);
        } else if inner_apostrophe {
            cleaned.push('\'');
        } else {
            cleaned.push(' ');
        }
    }
    cleaned
        .split_whitespace()
        .flat_map(|w| match w.parse::<u32>() {
            Ok(n) if n < 100 => spell(n).split(' ').map(String::from).collect::<Vec<_>>(),
            _ => vec![w.to_string()],
        })
        .collect()
}

/// Word errors (edit distance) and reference length after normalisation.
pub fn word_errors(reference: &str, hypothesis: &str) -> (usize, usize) {
    let r = normalise(reference);
    let h = normalise(hypothesis);
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut cur = vec![i + 1; h.len() + 1];
        for (j, hw) in h.iter().enumerate() {
            let sub = prev[j] + usize::from(rw != hw);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    (prev[h.len()], r.len())
}

/// Word error rate of `hypothesis` against `reference`.
pub fn wer(reference: &str, hypothesis: &str) -> f64 {
    let (errors, len) = word_errors(reference, hypothesis);
    if len == 0 {
        return if normalise(hypothesis).is_empty() {
            0.0
        } else {
            1.0
        };
    }
    errors as f64 / len as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_punctuation_and_numbers() {
        assert_eq!(
            normalise("Hello, World! It's 42."),
            ["hello", "world", "it's", "forty", "two"]
        );
        assert_eq!(
            normalise("'quoted' 7 20 100"),
            ["quoted", "seven", "twenty", "100"]
        );
    }

    #[test]
    fn counts_substitutions_insertions_and_deletions() {
        assert_eq!(wer("the cat sat", "The cat sat."), 0.0);
        assert_eq!(word_errors("the cat sat", "the bat sat"), (1, 3));
        assert_eq!(word_errors("the cat sat", "the cat sat down"), (1, 3));
        assert_eq!(word_errors("the cat sat", "cat"), (2, 3));
        assert!((wer("a b c d", "a x c") - 0.5).abs() < 1e-9);
        assert_eq!(wer("", ""), 0.0);
        assert_eq!(wer("", "thank you"), 1.0);
    }
}
