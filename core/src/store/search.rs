//! Text search that works for Chinese, split as `gridwork_model::search` splits it.
//!
//! SQLite's unicode61 tokenizer treats a run of Chinese characters as one token, and its trigram
//! tokenizer cannot match the two-character words people actually search for ("漏水", "噪音").
//! So text is pre-split here: each run of CJK characters becomes its single characters and its
//! overlapping bigrams, other text stays as words. A query is split the same way and every piece
//! must match (AND). unicode61 then only has to split on the spaces we put in.

use rusqlite::{params, Connection};

use crate::error::Result;

use gridwork_model::search::terms;

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
