//! How text is split for search, shared by the phone (SQLite FTS5, `core::store::search`) and the
//! server's case index (`sync-server` `rules::search`), so a word that finds a case on one finds
//! it on the other.
//!
//! Chinese has no spaces: each run of CJK characters becomes its single characters and its
//! overlapping bigrams ("楼道漏水" → 楼, 楼道, 道, 道漏, …), so the two-character words people
//! search for ("漏水", "噪音") match wherever they occur. Other text becomes lower-cased words.

use std::collections::BTreeSet;

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // Hiragana, Katakana
        | 0x3400..=0x4DBF    // CJK Extension A
        | 0x4E00..=0x9FFF    // CJK Unified Ideographs
        | 0xAC00..=0xD7AF    // Hangul syllables
        | 0xF900..=0xFAFF    // CJK Compatibility Ideographs
        | 0x20000..=0x2FA1F) // Extensions B–F and supplement
}

/// Text split into search terms: (lower-cased words, CJK characters and bigrams).
pub fn terms(text: &str) -> (Vec<String>, Vec<String>) {
    let mut words = vec![];
    let mut cjk_terms = vec![];
    let mut word = String::new();
    let mut run: Vec<char> = vec![];
    let flush_run = |run: &mut Vec<char>, out: &mut Vec<String>| {
        for (i, c) in run.iter().enumerate() {
            out.push(c.to_string());
            if let Some(next) = run.get(i + 1) {
                out.push(format!("{c}{next}"));
            }
        }
        run.clear();
    };
    for c in text.chars() {
        if is_cjk(c) {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word).to_lowercase());
            }
            run.push(c);
        } else if c.is_alphanumeric() {
            flush_run(&mut run, &mut cjk_terms);
            word.push(c);
        } else {
            flush_run(&mut run, &mut cjk_terms);
            if !word.is_empty() {
                words.push(std::mem::take(&mut word).to_lowercase());
            }
        }
    }
    flush_run(&mut run, &mut cjk_terms);
    if !word.is_empty() {
        words.push(word.to_lowercase());
    }
    (words, cjk_terms)
}

/// A space-separated token holding punctuation between letters or digits and no CJK ("w-g3",
/// "DV137-0364", "E-bike"), lower-cased with its outer punctuation trimmed: kept whole as well as
/// split, so an id typed as it is written finds exactly it, not every word that starts like a piece.
fn joined_word(token: &str) -> Option<String> {
    let t = token.trim_matches(|c: char| !c.is_alphanumeric());
    let inner = t.chars().any(|c| !c.is_alphanumeric());
    (inner && !t.chars().any(is_cjk)).then(|| t.to_lowercase())
}

/// Every term a case's texts are found by (title, description, code, reporter, place names…).
pub fn index_terms<'a>(texts: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for text in texts {
        let (words, cjk) = terms(text);
        out.extend(words);
        out.extend(cjk);
        out.extend(text.split_whitespace().filter_map(joined_word));
    }
    out
}

/// The term a case's code is found by exactly (a code typed in full opens the case). No other
/// term starts with `=`: terms hold letters, digits and CJK characters only.
pub fn code_term(code: &str) -> String {
    format!("={}", code.trim().to_lowercase())
}

/// One term of a query, as the index must hold it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum TermMatch {
    /// This term exactly (a CJK bigram or character, a full code).
    Exact(String),
    /// A term starting with this (a word being typed: "nois" finds "noise").
    Prefix(String),
}

/// What a person typed as terms that must all match (AND), or none when it holds nothing to
/// search by. For a CJK run its bigrams carry the meaning; a single character stands alone.
/// A joined word ("w-g3") is looked for whole.
pub fn query_terms(query: &str) -> Vec<TermMatch> {
    let mut out: Vec<TermMatch> = vec![];
    let mut rest = String::new();
    for token in query.split_whitespace() {
        match joined_word(token) {
            Some(whole) => out.push(TermMatch::Prefix(whole)),
            None => {
                rest.push_str(token);
                rest.push(' ');
            }
        }
    }
    let (words, cjk) = terms(&rest);
    out.extend(words.into_iter().map(TermMatch::Prefix));
    let bigrams: Vec<&String> = cjk.iter().filter(|t| t.chars().count() == 2).collect();
    if bigrams.is_empty() {
        out.extend(cjk.iter().map(|t| TermMatch::Exact(t.clone())));
    } else {
        out.extend(bigrams.into_iter().map(|t| TermMatch::Exact(t.clone())));
    }
    let mut seen = BTreeSet::new();
    out.retain(|t| seen.insert(t.clone()));
    out
}

/// The upper bound (exclusive) of the terms a prefix matches, in byte (and code point) order.
pub fn prefix_end(prefix: &str) -> String {
    format!("{prefix}{}", char::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chinese_text_becomes_characters_and_bigrams() {
        let t = index_terms(["楼道漏水"]);
        assert!(["楼", "楼道", "道", "道漏", "漏", "漏水", "水"].iter().all(|w| t.contains(*w)), "{t:?}");
        assert_eq!(t.len(), 7);
        let t = index_terms(["E-bike 充电", "Room 302"]);
        assert!(["e", "bike", "room", "302", "充", "充电", "电"].iter().all(|w| t.contains(*w)), "{t:?}");
    }

    #[test]
    fn a_query_needs_its_bigrams_and_word_prefixes() {
        assert_eq!(query_terms("漏水"), vec![TermMatch::Exact("漏水".into())]);
        assert_eq!(
            query_terms("楼道漏水"),
            vec![TermMatch::Exact("楼道".into()), TermMatch::Exact("道漏".into()), TermMatch::Exact("漏水".into())]
        );
        assert_eq!(query_terms("水"), vec![TermMatch::Exact("水".into())]);
        assert_eq!(query_terms("Noise 噪音"), vec![TermMatch::Prefix("noise".into()), TermMatch::Exact("噪音".into())]);
        assert!(query_terms("  ,. ").is_empty());
    }

    #[test]
    fn an_id_with_punctuation_is_found_whole() {
        let t = index_terms(["w-g3", "DV137-0364", "an E-bike, charging"]);
        assert!(["w-g3", "w", "g3", "dv137-0364", "dv137", "0364", "e-bike", "bike"].iter().all(|w| t.contains(*w)));
        assert!(!t.contains("e-bike,"), "outer punctuation trimmed: {t:?}");
        assert_eq!(query_terms("W-G3"), vec![TermMatch::Prefix("w-g3".into())]);
        assert_eq!(
            query_terms("dv137-03 漏水"),
            vec![TermMatch::Prefix("dv137-03".into()), TermMatch::Exact("漏水".into())]
        );
        assert_eq!(query_terms("楼-道"), vec![TermMatch::Exact("楼".into()), TermMatch::Exact("道".into())]);
    }

    #[test]
    fn a_code_term_cannot_be_typed_as_text() {
        assert_eq!(code_term(" DV137-0364 "), "=dv137-0364");
        assert!(index_terms(["=dv137-0364"]).iter().all(|t| !t.starts_with('=')));
        assert!("noise" < prefix_end("nois").as_str() && "nois" < prefix_end("nois").as_str());
        assert!("noit" > prefix_end("nois").as_str());
    }
}
