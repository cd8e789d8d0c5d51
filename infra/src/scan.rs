//! Finds the AWS SDK operations a source file calls, and the IAM actions they need.
//!
//! Every adapter in this workspace calls the SDK the same way: a fluent chain that starts
//! on a field or variable named `client` and ends in `.send()` (or `.into_paginator()`):
//!
//! ```text
//! self.client
//!     .get_item()
//!     .table_name(&self.table)
//!     ...
//!     .send()
//! ```
//!
//! The scanner blanks out comments, string and char literals and `#[cfg(test)]` modules,
//! then looks for `client . <op> ( )` followed by `.send()` or `.into_paginator()` before
//! the statement ends. The service is the one `aws_sdk_*` crate the file names; a file
//! with calls and zero or several SDK crates is an error, not a guess.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

/// One SDK operation call found in a source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdkCall {
    /// The `aws_sdk_*` crate without the prefix: `dynamodb`, `s3`, `personalizeruntime`, ...
    pub service: String,
    /// The fluent method: `get_item`, `create_dataset_import_job`, ...
    pub operation: String,
    /// The innermost `fn` the call is in (`""` at top level).
    pub function: String,
    /// 1-based line of the operation name.
    pub line: usize,
    /// The IAM actions the call needs.
    pub actions: Vec<String>,
}

impl fmt::Display for SdkCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "aws_sdk_{}::{} in fn {} (line {}) -> {}",
            self.service,
            self.operation,
            self.function,
            self.line,
            self.actions.join(", ")
        )
    }
}

/// Replaces comments and the contents of string and char literals with spaces (newlines
/// kept), so that braces and words inside them are not read as code.
pub fn blank_non_code(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |p| i + p);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let end = src[i + 2..].find("*/").map_or(b.len(), |p| i + 2 + p + 2);
                blank(&mut out, i, end);
                i = end;
            }
            b'r' if matches!(b.get(i + 1), Some(b'"') | Some(b'#'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                // Raw string r"..." or r#"..."#.
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let close = format!("\"{}", "#".repeat(hashes));
                let start = i + 2 + hashes;
                let end = src[start..].find(&close).map_or(b.len(), |p| start + p + close.len());
                blank(&mut out, start, end.saturating_sub(close.len()).max(start));
                i = end;
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                blank(&mut out, i + 1, j.min(b.len()));
                i = j + 1;
            }
            b'\'' => {
                // A char literal ('x', '\n', '\''), not a lifetime ('a).
                let len = if b.get(i + 1) == Some(&b'\\') {
                    b[i + 2..].iter().position(|&c| c == b'\'').map(|p| p + 3)
                } else if b.get(i + 2) == Some(&b'\'') {
                    Some(3)
                } else {
                    None
                };
                match len {
                    Some(len) => {
                        blank(&mut out, i + 1, i + len - 1);
                        i += len;
                    }
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    String::from_utf8(out).expect("only ASCII bytes were replaced")
}

/// Cuts `#[cfg(test)]` items: tests call SDK operations to set up fixtures.
fn without_tests(code: &str) -> String {
    let mut out = code.to_owned();
    while let Some(at) = out.find("#[cfg(test)]") {
        let Some(open) = out[at..].find('{').map(|p| at + p) else { break };
        let end = matching_brace(&out, open).unwrap_or(out.len() - 1);
        let blanked: String = out[at..=end].chars().map(|c| if c == '\n' { '\n' } else { ' ' }).collect();
        out.replace_range(at..=end, &blanked);
    }
    out
}

fn matching_brace(code: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in code[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + i);
                }
            }
            _ => {}
        }
    }
    None
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// `fn` items with their body spans: (name, body start, body end).
fn functions(code: &str) -> Vec<(String, usize, usize)> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(p) = code[from..].find("fn ") {
        let at = from + p;
        from = at + 3;
        if at > 0 && is_ident(b[at - 1]) {
            continue;
        }
        let name: String = code[at + 3..].trim_start().chars().take_while(|c| is_ident(*c as u8)).collect();
        if name.is_empty() {
            continue;
        }
        // The body opens at the first `{` before any `;` (a trait method without body has none).
        let rest = &code[at..];
        let (brace, semi) = (rest.find('{'), rest.find(';'));
        let Some(brace) = brace.filter(|bp| semi.is_none_or(|sp| *bp < sp)) else { continue };
        if let Some(end) = matching_brace(code, at + brace) {
            out.push((name, at + brace, end));
        }
    }
    out
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The `aws_sdk_*` crates a piece of code names.
fn services(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut from = 0;
    while let Some(p) = code[from..].find("aws_sdk_") {
        let start = from + p + "aws_sdk_".len();
        let name: String = code[start..].chars().take_while(|c| is_ident(*c as u8)).collect();
        from = start;
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

/// The SDK operation calls in one Rust source file (tests excluded), with their IAM actions.
pub fn sdk_calls_in(source: &str) -> Result<Vec<SdkCall>, String> {
    let code = without_tests(&blank_non_code(source));
    let b = code.as_bytes();
    let fns = functions(&code);
    let mut calls = Vec::new();
    let mut from = 0;
    while let Some(p) = code[from..].find("client") {
        let at = from + p;
        from = at + "client".len();
        if (at > 0 && is_ident(b[at - 1])) || b.get(from).is_some_and(|c| is_ident(*c)) {
            continue;
        }
        let dot = skip_ws(b, from);
        if b.get(dot) != Some(&b'.') {
            continue;
        }
        let name_at = skip_ws(b, dot + 1);
        let op: String = code[name_at..].chars().take_while(|c| is_ident(*c as u8)).collect();
        let paren = skip_ws(b, name_at + op.len());
        if op.is_empty() || b.get(paren) != Some(&b'(') || b.get(skip_ws(b, paren + 1)) != Some(&b')') {
            continue;
        }
        let statement_end = code[paren..].find(';').map_or(code.len(), |e| paren + e);
        let chain: String = code[paren..statement_end].split_whitespace().collect();
        if !(chain.contains(".send()") || chain.contains(".into_paginator()")) {
            continue;
        }
        let function = fns
            .iter()
            .filter(|(_, s, e)| *s < name_at && name_at < *e)
            .min_by_key(|(_, s, e)| e - s)
            .map(|(n, s, e)| (n.clone(), &code[*s..*e]))
            .unwrap_or((String::new(), ""));
        let named = services(&code);
        let service = match named.len() {
            1 => named.into_iter().next().expect("one"),
            _ => {
                return Err(format!(
                    "`client.{op}()` at line {}: the file names {} aws_sdk_* crates ({named:?}); cannot tell the service",
                    line_of(&code, name_at),
                    named.len()
                ));
            }
        };
        let actions = iam_actions(&service, &op, function.1)
            .map_err(|e| format!("`client.{op}()` at line {}: {e}", line_of(&code, name_at)))?;
        calls.push(SdkCall {
            service,
            operation: op,
            function: function.0,
            line: line_of(&code, name_at),
            actions,
        });
    }
    Ok(calls)
}

fn line_of(code: &str, at: usize) -> usize {
    code[..at].bytes().filter(|&c| c == b'\n').count() + 1
}

fn pascal(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect()
}

/// The IAM prefix of an SDK crate.
fn iam_prefix(service: &str) -> Result<&'static str, String> {
    Ok(match service {
        "dynamodb" => "dynamodb",
        "s3" => "s3",
        "sesv2" => "ses",
        "lambda" => "lambda",
        "eventbridge" => "events",
        "personalize" | "personalizeruntime" => "personalize",
        "sqs" => "sqs",
        "sns" => "sns",
        other => return Err(format!("no IAM prefix known for aws_sdk_{other}; add it to infra/src/scan.rs")),
    })
}

/// The IAM actions an SDK operation needs. Mostly `prefix:OperationName`; the exceptions
/// are AWS's (and each says why). `function_body` is the code around the call, for
/// `TransactWriteItems`, which IAM checks item by item.
pub fn iam_actions(service: &str, operation: &str, function_body: &str) -> Result<Vec<String>, String> {
    let prefix = iam_prefix(service)?;
    let actions: Vec<String> = match (service, operation) {
        // Multipart uploads are authorised as s3:PutObject.
        ("s3", "create_multipart_upload" | "upload_part" | "complete_multipart_upload") => {
            vec!["s3:PutObject".into()]
        }
        ("s3", "list_objects_v2" | "list_objects") => vec!["s3:ListBucket".into()],
        // Without s3:ListBucket a missing key answers 403 AccessDenied instead of 404
        // NoSuchKey, and the code reads "not there yet" (a manifest, models/LATEST) from 404.
        ("s3", "get_object" | "head_object") => vec!["s3:GetObject".into(), "s3:ListBucket".into()],
        ("lambda", "invoke") => vec!["lambda:InvokeFunction".into()],
        // There is no dynamodb:TransactWriteItems action: IAM authorises each item's write.
        ("dynamodb", "transact_write_items") => {
            let kinds = [
                ("Put::builder()", "dynamodb:PutItem"),
                ("Update::builder()", "dynamodb:UpdateItem"),
                ("Delete::builder()", "dynamodb:DeleteItem"),
                ("ConditionCheck::builder()", "dynamodb:ConditionCheckItem"),
            ];
            let compact: String = function_body.split_whitespace().collect();
            let found: Vec<String> = kinds
                .iter()
                .filter(|(builder, _)| {
                    compact
                        .match_indices(builder)
                        .any(|(i, _)| i == 0 || !is_ident(compact.as_bytes()[i - 1]))
                })
                .map(|(_, a)| (*a).to_owned())
                .collect();
            if found.is_empty() {
                return Err(
                    "transact_write_items without Put/Update/Delete/ConditionCheck builders in the same fn"
                        .into(),
                );
            }
            found
        }
        // Personalize assumes the import role: the caller must be allowed to pass it.
        ("personalize", "create_dataset_import_job") => {
            vec!["personalize:CreateDatasetImportJob".into(), "iam:PassRole".into()]
        }
        _ => vec![format!("{prefix}:{}", pascal(operation))],
    };
    Ok(actions)
}

/// Every `.rs` file under `dir` (recursively), sorted.
pub fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fluent_chain_over_lines_is_one_call() {
        let src = r#"
use aws_sdk_dynamodb::Client;
impl Store {
    async fn put(&self) -> Result<(), E> {
        // self.client.scan().send() in a comment is not a call
        let s = "self.client.delete_item().send()";
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .send()
            .await;
        let (client, t) = (self.client.clone(), 1);
        Ok(())
    }
}
#[cfg(test)]
mod tests {
    fn setup() { client.create_table().send(); }
}
"#;
        let calls = sdk_calls_in(src).unwrap();
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(calls[0].operation, "put_item");
        assert_eq!(calls[0].function, "put");
        assert_eq!(calls[0].line, 9);
        assert_eq!(calls[0].actions, ["dynamodb:PutItem"]);
    }

    #[test]
    fn transactions_are_the_writes_inside_them() {
        let src = "use aws_sdk_dynamodb::types::{Put, Delete};\nfn save(&self) { let a = Put::builder().build(); \
                   let d = Delete::builder().build(); self.client.transact_write_items().send(); }";
        let calls = sdk_calls_in(src).unwrap();
        assert_eq!(calls[0].actions, ["dynamodb:PutItem", "dynamodb:DeleteItem"]);
        let bare =
            "use aws_sdk_dynamodb::Client;\nfn save(&self) { self.client.transact_write_items().send(); }";
        assert!(sdk_calls_in(bare).unwrap_err().contains("without Put/Update"));
    }

    #[test]
    fn a_file_naming_two_sdks_cannot_be_guessed() {
        let src = "use aws_sdk_s3::Client; use aws_sdk_sesv2::Client as Ses;\nfn f(&self) { self.client.send_email().send(); }";
        assert!(sdk_calls_in(src).unwrap_err().contains("cannot tell the service"));
    }

    #[test]
    fn aws_names_that_differ_from_the_operation() {
        assert_eq!(iam_actions("lambda", "invoke", "").unwrap(), ["lambda:InvokeFunction"]);
        assert_eq!(iam_actions("sesv2", "send_email", "").unwrap(), ["ses:SendEmail"]);
        assert_eq!(iam_actions("s3", "upload_part", "").unwrap(), ["s3:PutObject"]);
        assert_eq!(iam_actions("s3", "list_objects_v2", "").unwrap(), ["s3:ListBucket"]);
        assert_eq!(
            iam_actions("personalizeruntime", "get_personalized_ranking", "").unwrap(),
            ["personalize:GetPersonalizedRanking"]
        );
        assert_eq!(iam_actions("eventbridge", "put_events", "").unwrap(), ["events:PutEvents"]);
        assert!(iam_actions("kinesis", "put_record", "").is_err());
    }
}
