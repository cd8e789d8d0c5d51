//! Parsing `GET /ranking/{userId}`'s query string into a request a backend can take.
//! Strict on purpose: a misspelt parameter (`numresults`) is a 400 that names it,
//! not a silently ignored wish.

use std::collections::{BTreeMap, HashMap};

use schemas::ItemId;

use crate::error::ApiError;
use crate::port::ResolvedFilter;

pub const DEFAULT_NUM_RESULTS: usize = 25;
/// Personalize's limit for `numResults` and for a rerank's `inputList`.
pub const MAX_NUM_RESULTS: usize = 500;
pub const MAX_RERANK_ITEMS: usize = 500;
/// Personalize's limits on `context` and `filterValues` (service model constraints).
pub const MAX_CONTEXT_ENTRIES: usize = 150;
pub const MAX_CONTEXT_KEY_CHARS: usize = 150;
pub const MAX_FILTER_VALUES: usize = 25;
pub const MAX_FILTER_KEY_CHARS: usize = 50;
pub const MAX_VALUE_CHARS: usize = 1000;

const ALLOWED: &str = "numResults, filter, filterValues.<NAME>, items, context.<NAME>";

/// The query of one ranking request, checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RankingQuery {
    pub num_results: Option<usize>,
    pub filter: Option<ResolvedFilter>,
    /// Present when the caller asked for a rerank of these items.
    pub items: Option<Vec<ItemId>>,
    pub context: BTreeMap<String, String>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::InvalidParameter(message.into())
}

fn check_key(kind: &str, key: &str, max_chars: usize) -> Result<(), ApiError> {
    let ok = !key.is_empty()
        && key.len() <= max_chars
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(bad(format!("{kind} name {key:?} must be 1 to {max_chars} letters, digits or underscores")))
    }
}

fn check_value(kind: &str, key: &str, value: &str) -> Result<(), ApiError> {
    if value.chars().count() > MAX_VALUE_CHARS {
        return Err(bad(format!("{kind}.{key} is longer than {MAX_VALUE_CHARS} characters")));
    }
    Ok(())
}

/// The limits of one `<kind>.<NAME>=<value>` family (`context`, `filterValues`).
const CONTEXT: Prefixed = Prefixed {
    kind: "context",
    max_key_chars: MAX_CONTEXT_KEY_CHARS,
    max_entries: MAX_CONTEXT_ENTRIES,
    entries: "context entries",
};

const FILTER_VALUES: Prefixed = Prefixed {
    kind: "filterValues",
    max_key_chars: MAX_FILTER_KEY_CHARS,
    max_entries: MAX_FILTER_VALUES,
    entries: "filterValues",
};

struct Prefixed {
    kind: &'static str,
    max_key_chars: usize,
    max_entries: usize,
    /// What the entries are called in the "at most" message.
    entries: &'static str,
}

impl Prefixed {
    fn insert(&self, map: &mut BTreeMap<String, String>, name: &str, value: String) -> Result<(), ApiError> {
        let kind = self.kind;
        check_key(kind, name, self.max_key_chars)?;
        check_value(kind, name, &value)?;
        if map.insert(name.to_owned(), value).is_some() {
            return Err(bad(format!("{kind}.{name} is given more than once")));
        }
        if map.len() > self.max_entries {
            return Err(bad(format!("at most {} {} are allowed", self.max_entries, self.entries)));
        }
        Ok(())
    }
}

fn set_once(slot: &mut Option<String>, name: &str, value: String) -> Result<(), ApiError> {
    if slot.replace(value).is_some() {
        return Err(bad(format!("{name} is given more than once")));
    }
    Ok(())
}

/// Parses the raw query string. `filters` maps filter names to Personalize filter ARNs.
pub fn parse(raw: Option<&str>, filters: &HashMap<String, String>) -> Result<RankingQuery, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| bad(format!("the query string does not parse: {e}")))?;

    let (mut num_results, mut filter, mut items) = (None, None, None);
    let mut filter_values = BTreeMap::new();
    let mut context = BTreeMap::new();
    for (key, value) in pairs {
        if let Some(name) = key.strip_prefix("context.") {
            CONTEXT.insert(&mut context, name, value)?;
        } else if let Some(name) = key.strip_prefix("filterValues.") {
            FILTER_VALUES.insert(&mut filter_values, name, value)?;
        } else {
            match key.as_str() {
                "numResults" => set_once(&mut num_results, "numResults", value)?,
                "filter" => set_once(&mut filter, "filter", value)?,
                "items" => set_once(&mut items, "items", value)?,
                other => {
                    let shown: String = other.chars().take(64).collect();
                    return Err(bad(format!("unknown query parameter {shown:?}; allowed: {ALLOWED}")));
                }
            }
        }
    }

    let num_results = num_results
        .map(|raw| {
            raw.parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_NUM_RESULTS).contains(n))
                .ok_or_else(|| bad(format!("numResults must be a whole number from 1 to {MAX_NUM_RESULTS}")))
        })
        .transpose()?;

    let filter = match filter {
        Some(name) => {
            let arn = filters.get(&name).ok_or_else(|| {
                let mut known: Vec<&str> = filters.keys().map(String::as_str).collect();
                known.sort_unstable();
                let shown: String = name.chars().take(64).collect();
                bad(format!("unknown filter {shown:?}; configured filters: [{}]", known.join(", ")))
            })?;
            Some(ResolvedFilter { name, arn: arn.clone(), values: filter_values })
        }
        None if !filter_values.is_empty() => return Err(bad("filterValues need a filter")),
        None => None,
    };

    let items = items.map(|raw| parse_items(&raw)).transpose()?;
    Ok(RankingQuery { num_results, filter, items, context })
}

/// `items=a,b,c`: at most 500 ids, each a valid ITEM_ID; repeats are dropped, first one wins.
fn parse_items(raw: &str) -> Result<Vec<ItemId>, ApiError> {
    let mut items: Vec<ItemId> = Vec::new();
    for (position, part) in raw.split(',').enumerate() {
        if position >= MAX_RERANK_ITEMS {
            return Err(bad(format!("items may name at most {MAX_RERANK_ITEMS} ids")));
        }
        let id = ItemId::parse(part).map_err(|e| bad(format!("items[{position}]: {e}")))?;
        if !items.contains(&id) {
            items.push(id);
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters() -> HashMap<String, String> {
        HashMap::from([(
            "unseen".to_owned(),
            "arn:aws:personalize:ap-southeast-1:123456789012:filter/unseen".to_owned(),
        )])
    }

    fn message(raw: &str) -> String {
        match parse(Some(raw), &filters()) {
            Err(ApiError::InvalidParameter(m)) => m,
            other => panic!("{raw:?} should be refused, got {other:?}"),
        }
    }

    #[test]
    fn the_empty_query_means_defaults() {
        assert_eq!(parse(None, &filters()).unwrap(), RankingQuery::default());
    }

    #[test]
    fn everything_at_once() {
        let q = parse(
            Some("numResults=10&filter=unseen&filterValues.SUBJECT=%22math%22&context.DEVICE=mobile&items=a,b,a"),
            &filters(),
        )
        .unwrap();
        assert_eq!(q.num_results, Some(10));
        let f = q.filter.unwrap();
        assert_eq!(f.arn, "arn:aws:personalize:ap-southeast-1:123456789012:filter/unseen");
        assert_eq!(f.values["SUBJECT"], "\"math\"");
        assert_eq!(q.context["DEVICE"], "mobile");
        let items = q.items.unwrap();
        let items: Vec<&str> = items.iter().map(|i| i.as_str()).collect();
        assert_eq!(items, ["a", "b"], "repeats dropped, order kept");
    }

    #[test]
    fn bad_parameters_are_named() {
        assert!(message("numResults=0").contains("from 1 to 500"));
        assert!(message("numResults=501").contains("from 1 to 500"));
        assert!(message("numResults=ten").contains("from 1 to 500"));
        assert!(message("numResults=1&numResults=2").contains("more than once"));
        assert!(message("numresults=5").contains("unknown query parameter \"numresults\""));
        assert!(message("filter=nope").contains("unknown filter \"nope\"; configured filters: [unseen]"));
        assert!(message("filterValues.X=1").contains("need a filter"));
        assert!(message("context.bad-key=1").contains("letters, digits or underscores"));
        assert!(message(&format!("context.K={}", "v".repeat(1001))).contains("longer than 1000"));
        assert!(message("items=a,,b").contains("items[1]: itemId is empty"));
        assert!(message(&format!("items={}", "x".repeat(257))).contains("257 characters"));
        let too_many: Vec<String> = (0..501).map(|n| format!("i{n}")).collect();
        assert!(message(&format!("items={}", too_many.join(","))).contains("at most 500"));
    }

    #[test]
    fn limits_on_maps() {
        let many: Vec<String> = (0..151).map(|n| format!("context.K{n}=v")).collect();
        assert!(message(&many.join("&")).contains("at most 150 context"));
        let many: Vec<String> = (0..26).map(|n| format!("filterValues.K{n}=v")).collect();
        assert!(message(&format!("filter=unseen&{}", many.join("&"))).contains("at most 25 filterValues"));
    }
}
