//! Word error rate with a documented normaliser, for comparing transcripts with references.
//!
//! # The normaliser
//!
//! Applied to both sides before words are compared, so that a model writing "12" or
//! "Mr." is not charged for what a reference spells "twelve" or "mister":
//!
//! 1. lower case;
//! 2. numbers become words: `7` → seven, `42` → forty two, `250` → two hundred fifty,
//!    `1,000` and `1000` → one thousand (any size that fits 64 bits; no "and"), `3.5` →
//!    three point five, `9:30` → nine thirty (`9:00` → nine, `9:05` → nine oh five),
//!    `21st` → twenty first, `50%` → fifty percent;
//! 3. an "and" between two number words of one number ("two hundred and fifty") is
//!    dropped, so both ways of saying a number match;
//! 4. `'` is kept inside words (it's, o'clock); every other character that is not a
//!    letter or digit is a space (so "forty-two" is "forty two");
//! 5. a few abbreviations are spelled out: mr → mister, mrs → missus, dr → doctor,
//!    ok → okay;
//! 6. split on white space.
//!
//! WER is the word Levenshtein distance (substitutions + deletions + insertions) over the
//! reference's word count. An empty reference scores 0 if the hypothesis is empty, else 1
//! (the harness reports the words produced on silence separately).

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
const SCALES: [(u64, &str); 6] = [
    (1_000_000_000_000_000_000, "quintillion"),
    (1_000_000_000_000_000, "quadrillion"),
    (1_000_000_000_000, "trillion"),
    (1_000_000_000, "billion"),
    (1_000_000, "million"),
    (1_000, "thousand"),
];

/// The words of `n` in English, without "and": 1234 → one thousand two hundred thirty four.
pub fn spell_number(n: u64) -> Vec<&'static str> {
    let mut out = Vec::new();
    if n == 0 {
        out.push(ONES[0]);
        return out;
    }
    let mut rest = n;
    for (scale, name) in SCALES {
        if rest >= scale {
            spell_below_thousand(rest / scale, &mut out);
            out.push(name);
            rest %= scale;
        }
    }
    spell_below_thousand(rest, &mut out);
    out
}

fn spell_below_thousand(n: u64, out: &mut Vec<&'static str>) {
    debug_assert!(n < 1000);
    if n >= 100 {
        out.push(ONES[(n / 100) as usize]);
        out.push("hundred");
    }
    let n = n % 100;
    match n {
        0 => {}
        1..=19 => out.push(ONES[n as usize]),
        _ => {
            out.push(TENS[(n / 10) as usize]);
            if !n.is_multiple_of(10) {
                out.push(ONES[(n % 10) as usize]);
            }
        }
    }
}

/// The ordinal of a spelled number's last word: one → first, twenty → twentieth.
fn ordinal(word: &str) -> String {
    match word {
        "one" => "first".into(),
        "two" => "second".into(),
        "three" => "third".into(),
        "five" => "fifth".into(),
        "eight" => "eighth".into(),
        "nine" => "ninth".into(),
        "twelve" => "twelfth".into(),
        w if w.ends_with('y') => format!("{}ieth", &w[..w.len() - 1]),
        w => format!("{w}th"),
    }
}

fn is_number_word(w: &str) -> bool {
    ONES.contains(&w)
        || TENS[2..].contains(&w)
        || w == "hundred"
        || SCALES.iter().any(|(_, name)| *name == w)
}

/// The words of one token that holds a digit, or `None` if it is not a number form.
fn number_words(token: &str) -> Option<Vec<String>> {
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let cardinal = |s: &str| -> Option<Vec<String>> {
        let n: u64 = s.parse().ok()?;
        Some(spell_number(n).into_iter().map(String::from).collect())
    };
    if all_digits(token) {
        return cardinal(token);
    }
    if let Some((int, frac)) = token.split_once('.')
        && all_digits(int)
        && all_digits(frac)
    {
        let mut words = cardinal(int)?;
        words.push("point".into());
        words.extend(
            frac.bytes()
                .map(|b| ONES[usize::from(b - b'0')].to_string()),
        );
        return Some(words);
    }
    if let Some((hours, minutes)) = token.split_once(':')
        && all_digits(hours)
        && minutes.len() == 2
        && all_digits(minutes)
    {
        let mut words = cardinal(hours)?;
        match minutes.parse::<u64>().ok()? {
            0 => {}
            m @ 1..=9 => {
                words.push("oh".into());
                words.push(ONES[m as usize].into());
            }
            m => words.extend(cardinal(&m.to_string())?),
        }
        return Some(words);
    }
    for suffix in ["st", "nd", "rd", "th"] {
        if let Some(digits) = token.strip_suffix(suffix)
            && all_digits(digits)
        {
            let mut words = cardinal(digits)?;
            let last = words.pop()?;
            words.push(ordinal(&last));
            return Some(words);
        }
    }
    None
}

fn abbreviation(word: &str) -> &str {
    match word {
        "mr" => "mister",
        "mrs" => "missus",
        "dr" => "doctor",
        "ok" => "okay",
        w => w,
    }
}

/// The normalised words of `text` (see the module docs).
pub fn normalise(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.to_lowercase().chars().collect();
    let digit_at = |i: usize| chars.get(i).is_some_and(char::is_ascii_digit);
    let mut cleaned = String::with_capacity(chars.len());
    for (i, &c) in chars.iter().enumerate() {
        let between_digits = i > 0 && digit_at(i - 1) && digit_at(i + 1);
        let inner_apostrophe = (c == '\'' || c == '’')
            && i > 0
            && chars[i - 1].is_alphanumeric()
            && chars.get(i + 1).is_some_and(|n| n.is_alphanumeric());
        if c.is_alphanumeric() {
            cleaned.push(c);
        } else if inner_apostrophe {
            cleaned.push('\'');
        } else if c == ',' && between_digits && (1..=3).all(|k| digit_at(i + k)) && !digit_at(i + 4)
        {
            // A thousands separator: 1,000 is 1000.
        } else if (c == '.' || c == ':') && between_digits {
            cleaned.push(c);
        } else if c == '%' {
            cleaned.push_str(" percent ");
        } else {
            cleaned.push(' ');
        }
    }
    let mut words: Vec<String> = Vec::new();
    for token in cleaned.split_whitespace() {
        let spelled = token
            .bytes()
            .any(|b| b.is_ascii_digit())
            .then(|| number_words(token))
            .flatten();
        match spelled {
            Some(number) => words.extend(number),
            None => {
                // A '.' or ':' kept between digits of a token that is no number form.
                for part in token.split(['.', ':']).filter(|p| !p.is_empty()) {
                    words.push(abbreviation(part).to_string());
                }
            }
        }
    }
    // "two hundred and fifty" → "two hundred fifty".
    let mut out: Vec<String> = Vec::with_capacity(words.len());
    for (i, w) in words.iter().enumerate() {
        let joins_a_number = w == "and"
            && out.last().is_some_and(|p| {
                ["hundred", "thousand", "million", "billion"].contains(&p.as_str())
            })
            && words.get(i + 1).is_some_and(|n| is_number_word(n));
        if !joins_a_number {
            out.push(w.clone());
        }
    }
    out
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
            ["quoted", "seven", "twenty", "one", "hundred"]
        );
    }

    #[test]
    fn spells_numbers_of_any_size() {
        assert_eq!(spell_number(0), ["zero"]);
        assert_eq!(spell_number(250), ["two", "hundred", "fifty"]);
        assert_eq!(
            spell_number(1_002_013).join(" "),
            "one million two thousand thirteen"
        );
        assert_eq!(
            spell_number(u64::MAX).first().copied(),
            Some("eighteen"),
            "the largest value spells too"
        );
        assert_eq!(
            normalise("1,000 or 1000").join(" "),
            "one thousand or one thousand"
        );
        assert_eq!(
            normalise("1,2345").join(" "),
            "one two thousand three hundred forty five"
        );
    }

    #[test]
    fn spells_decimals_times_ordinals_and_percentages() {
        assert_eq!(normalise("3.5").join(" "), "three point five");
        assert_eq!(normalise("at 9:00.").join(" "), "at nine");
        assert_eq!(normalise("9:05 9:30").join(" "), "nine oh five nine thirty");
        assert_eq!(
            normalise("the 21st and 2nd, 12th").join(" "),
            "the twenty first and second twelfth"
        );
        assert_eq!(normalise("the 40th").join(" "), "the fortieth");
        assert_eq!(normalise("50% off").join(" "), "fifty percent off");
        assert_eq!(normalise("end. 3 dots").join(" "), "end three dots");
    }

    #[test]
    fn drops_the_and_inside_a_number_and_expands_abbreviations() {
        assert_eq!(
            normalise("two hundred and fifty"),
            normalise("two-hundred fifty")
        );
        assert_eq!(normalise("bread and butter").join(" "), "bread and butter");
        assert_eq!(
            normalise("a hundred and then").join(" "),
            "a hundred and then"
        );
        assert_eq!(
            normalise("Mr. Dashwood, OK").join(" "),
            "mister dashwood okay"
        );
        assert_eq!(wer("mister john dashwood", "Mr. John Dashwood"), 0.0);
        assert_eq!(wer("She bought 3 apples", "she bought three apples."), 0.0);
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
