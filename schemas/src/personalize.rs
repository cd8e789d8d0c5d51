//! The Personalize dataset schemas (Avro JSON). The files under `schemas/personalize/`
//! are the source of truth: infra deploys them byte for byte, and a test in infra
//! checks the template against them.

/// Interactions: USER_ID, ITEM_ID, TIMESTAMP (epoch seconds), EVENT_TYPE, EVENT_VALUE?.
pub const INTERACTIONS_SCHEMA: &str = include_str!("../personalize/interactions.json");
/// Users: USER_ID and a categorical COHORT.
pub const USERS_SCHEMA: &str = include_str!("../personalize/users.json");
/// Items: ITEM_ID with categorical SUBJECT and LEVEL.
pub const ITEMS_SCHEMA: &str = include_str!("../personalize/items.json");

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn fields(schema: &str) -> Vec<(String, Value)> {
        let v: Value = serde_json::from_str(schema).unwrap();
        assert_eq!(v["type"], "record");
        assert_eq!(v["namespace"], "com.amazonaws.personalize.schema");
        v["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["name"].as_str().unwrap().to_owned(), f["type"].clone()))
            .collect()
    }

    #[test]
    fn interactions_schema_matches_the_csv_we_export() {
        let f = fields(INTERACTIONS_SCHEMA);
        let names: Vec<&str> = f.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, crate::interaction::CSV_HEADER_WITH_VALUE);
        assert_eq!(f[2].1, "long", "TIMESTAMP is epoch seconds as a long");
        assert_eq!(f[4].1, serde_json::json!(["null", "float"]), "EVENT_VALUE is an optional float");
    }

    #[test]
    fn users_and_items_have_their_ids_first() {
        assert_eq!(fields(USERS_SCHEMA)[0].0, "USER_ID");
        assert_eq!(fields(ITEMS_SCHEMA)[0].0, "ITEM_ID");
    }
}
