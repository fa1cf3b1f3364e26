//! Text search that works for Chinese.
//!
//! SQLite's unicode61 tokenizer treats a run of Chinese characters as one token, and its trigram
//! tokenizer cannot match the two-character words people actually search for ("漏水", "噪音").
//! So text is pre-split here: each run of CJK characters becomes its single characters and its
//! overlapping bigrams, other text stays as words. A query is split the same way and every piece
//! must match (AND). unicode61 then only has to split on the spaces we put in.

use rusqlite::{params, Connection};

use crate::error::Result;

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // Hiragana, Katakana
        | 0x3400..=0x4DBF    // CJK Extension A
        | 0x4E00..=0x9FFF    // CJK Unified Ideographs
        | 0xAC00..=0xD7AF    // Hangul syllables
        | 0xF900..=0xFAFF    // CJK Compatibility Ideographs
        | 0x20000..=0x2FA1F) // Extensions B–F and supplement
}

/// Splits text into search terms: words, CJK characters and CJK bigrams.
fn terms(text: &str) -> (Vec<String>, Vec<String>) {
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

/// The string stored in the FTS column for a case.
pub(crate) fn tokens(title: &str, description: &str) -> String {
    let (mut words, cjk) = terms(&format!("{title}\n{description}"));
    words.extend(cjk);
    words.join(" ")
}

/// An FTS5 MATCH expression for what a user typed, or `None` if it has no searchable terms.
pub(crate) fn match_expression(query: &str) -> Option<String> {
    let (words, cjk) = terms(query);
    let mut parts: Vec<String> = words.iter().map(|w| format!("\"{}\"*", w.replace('"', ""))).collect();
    // For a CJK run, its bigrams carry the meaning; a single character stands alone.
    let run_terms: Vec<&String> = cjk.iter().filter(|t| t.chars().count() == 2).collect();
    if run_terms.is_empty() {
        parts.extend(cjk.iter().map(|t| format!("\"{t}\"")));
    } else {
        parts.extend(run_terms.iter().map(|t| format!("\"{t}\"")));
    }
    if parts.is_empty() {
        None
    } else {
        Some(parts.join(" AND "))
    }
}

/// (Re)indexes one case row.
pub(crate) fn index(conn: &Connection, rowid: i64, title: &str, description: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM case_search WHERE rowid = ?1")?.execute([rowid])?;
    conn.prepare_cached("INSERT INTO case_search (rowid, tokens) VALUES (?1, ?2)")?
        .execute(params![rowid, tokens(title, description)])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chinese_text_becomes_characters_and_bigrams() {
        assert_eq!(tokens("楼道漏水", ""), "楼 楼道 道 道漏 漏 漏水 水");
        assert_eq!(tokens("E-bike 充电", "Room 302"), "e bike room 302 充 充电 电");
    }

    #[test]
    fn two_character_query_matches_its_bigram() {
        assert_eq!(match_expression("漏水").as_deref(), Some("\"漏水\""));
        assert_eq!(match_expression("楼道漏水").as_deref(), Some("\"楼道\" AND \"道漏\" AND \"漏水\""));
        assert_eq!(match_expression("水").as_deref(), Some("\"水\""));
        assert_eq!(match_expression("Noise 噪音").as_deref(), Some("\"noise\"* AND \"噪音\""));
        assert_eq!(match_expression("  ,. "), None);
    }
}
