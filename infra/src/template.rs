//! The SAM template, parsed, and the least-privilege checks over it.

use std::collections::BTreeSet;

use serde_yaml_ng::Value;

use crate::Function;

/// `infra/template.yaml`, parsed.
pub fn load() -> Value {
    let path = crate::workspace_root().join("infra/template.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn resources(template: &Value) -> &serde_yaml_ng::Mapping {
    template.get("Resources").and_then(Value::as_mapping).expect("the template has Resources")
}

pub fn resource<'a>(template: &'a Value, id: &str) -> Option<&'a Value> {
    resources(template).get(id)
}

pub fn resource_mut<'a>(template: &'a mut Value, id: &str) -> Option<&'a mut Value> {
    template.get_mut("Resources")?.get_mut(id)
}

/// A tagged value's tag without the `!` (`Ref`, `Sub`, `GetAtt`, `If`), or the long form's key.
fn intrinsic(v: &Value) -> Option<(String, &Value)> {
    match v {
        Value::Tagged(t) => Some((t.tag.to_string().trim_start_matches('!').to_owned(), &t.value)),
        Value::Mapping(m) if m.len() == 1 => {
            let (k, v) = m.iter().next()?;
            let k = k.as_str()?;
            let name = if k == "Ref" { "Ref" } else { k.strip_prefix("Fn::")? };
            Some((name.to_owned(), v))
        }
        _ => None,
    }
}

/// One `Allow` or `Deny` statement.
#[derive(Debug, Clone)]
pub struct Statement {
    pub effect: String,
    pub actions: Vec<String>,
    pub resources: Vec<Value>,
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Sequence(items) => items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

/// Every element of a `Resource`, with `!If` branches flattened and `AWS::NoValue` dropped.
fn resource_items(v: &Value, out: &mut Vec<Value>) {
    match (v, intrinsic(v)) {
        (Value::Sequence(items), _) => items.iter().for_each(|i| resource_items(i, out)),
        (_, Some((name, args))) if name == "If" => {
            if let Some(seq) = args.as_sequence() {
                seq.iter().skip(1).for_each(|branch| resource_items(branch, out));
            }
        }
        (_, Some((name, args))) if name == "Ref" && args.as_str() == Some("AWS::NoValue") => {}
        _ => out.push(v.clone()),
    }
}

fn statements_of(document: &Value, out: &mut Vec<Statement>) {
    let Some(list) = document.get("Statement") else { return };
    let mut list = match list {
        Value::Sequence(s) => s.clone(),
        other => vec![other.clone()],
    };
    // A conditional statement (`!If [Cond, {...}, !Ref AWS::NoValue]`) counts with both branches.
    let mut flat = Vec::new();
    while let Some(s) = list.pop() {
        match intrinsic(&s) {
            Some((name, args)) if name == "If" => {
                list.extend(args.as_sequence().into_iter().flatten().skip(1).cloned());
            }
            Some((name, args)) if name == "Ref" && args.as_str() == Some("AWS::NoValue") => {}
            _ => flat.push(s),
        }
    }
    flat.reverse();
    for s in flat {
        let mut resources = Vec::new();
        if let Some(r) = s.get("Resource") {
            resource_items(r, &mut resources);
        }
        out.push(Statement {
            effect: s.get("Effect").and_then(Value::as_str).unwrap_or("").to_owned(),
            actions: s.get("Action").map(strings).unwrap_or_default(),
            resources,
        });
    }
}

/// The statements of an `AWS::IAM::Role`'s inline policies (not its trust policy).
pub fn role_statements(template: &Value, role_id: &str) -> Vec<Statement> {
    let mut out = Vec::new();
    let Some(role) = resource(template, role_id) else { return out };
    if let Some(policies) =
        role.get("Properties").and_then(|p| p.get("Policies")).and_then(Value::as_sequence)
    {
        for p in policies {
            if let Some(doc) = p.get("PolicyDocument") {
                statements_of(doc, &mut out);
            }
        }
    }
    out
}

/// Every permission statement in the template: role policies, managed and inline policies,
/// bucket, queue and topic policies.
pub fn all_statements(template: &Value) -> Vec<(String, Statement)> {
    let mut out = Vec::new();
    for (id, r) in resources(template) {
        let id = id.as_str().unwrap_or_default().to_owned();
        let Some(props) = r.get("Properties") else { continue };
        let mut found = Vec::new();
        if let Some(policies) = props.get("Policies").and_then(Value::as_sequence) {
            for p in policies {
                if let Some(doc) = p.get("PolicyDocument") {
                    statements_of(doc, &mut found);
                }
            }
        }
        for key in ["PolicyDocument", "PolicyText"] {
            if let Some(doc) = props.get(key) {
                statements_of(doc, &mut found);
            }
        }
        out.extend(found.into_iter().map(|s| (id.clone(), s)));
    }
    out
}

/// The template names a value refers to: `!Ref X`, `!GetAtt X.Arn`, `${X}` / `${X.Arn}`
/// in `!Sub`. Pseudo parameters (`AWS::...`) are left out.
pub fn referenced_names(v: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    collect_names(v, &mut out);
    out.retain(|n| !n.starts_with("AWS::"));
    out
}

fn collect_names(v: &Value, out: &mut BTreeSet<String>) {
    match intrinsic(v) {
        Some((name, args)) if name == "Ref" => {
            if let Some(s) = args.as_str() {
                out.insert(s.to_owned());
            }
        }
        Some((name, args)) if name == "GetAtt" => match args {
            Value::String(s) => {
                out.insert(s.split('.').next().unwrap_or(s).to_owned());
            }
            Value::Sequence(seq) => {
                if let Some(s) = seq.first().and_then(Value::as_str) {
                    out.insert(s.to_owned());
                }
            }
            _ => {}
        },
        Some((name, args)) if name == "Sub" => {
            let (text, vars) = match args {
                Value::String(s) => (s.as_str(), None),
                Value::Sequence(seq) => (seq.first().and_then(Value::as_str).unwrap_or(""), seq.get(1)),
                _ => ("", None),
            };
            let mut rest = text;
            while let Some(start) = rest.find("${") {
                let after = &rest[start + 2..];
                let Some(end) = after.find('}') else { break };
                let var = &after[..end];
                if !var.starts_with('!') {
                    out.insert(var.split('.').next().unwrap_or(var).to_owned());
                }
                rest = &after[end..];
            }
            if let Some(vars) = vars.and_then(Value::as_mapping) {
                for (k, v) in vars {
                    // A Sub variable names a local value, not a resource; follow what it holds.
                    if let Some(k) = k.as_str() {
                        out.remove(k);
                    }
                    collect_names(v, out);
                }
            }
        }
        Some((_, args)) => collect_names(args, out),
        None => match v {
            Value::Sequence(s) => s.iter().for_each(|i| collect_names(i, out)),
            Value::Mapping(m) => m.values().for_each(|i| collect_names(i, out)),
            _ => {}
        },
    }
}

/// Whether an action is a wildcard: `*`, `s3:*`, `dynamodb:Get*`.
pub fn is_wildcard(action: &str) -> bool {
    action.contains('*')
}

/// The actions a function's role allows.
pub fn granted_actions(template: &Value, f: &Function) -> BTreeSet<String> {
    role_statements(template, f.role_id)
        .into_iter()
        .filter(|s| s.effect == "Allow")
        .flat_map(|s| s.actions)
        .collect()
}

/// Least privilege for one function, as a list of problems (empty = fine):
/// the role exists and is the function's role; it allows exactly `code_actions` plus the
/// platform grants; no wildcard action; every resource is one of the function's own.
pub fn check_function(template: &Value, f: &Function, code_actions: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(function) = resource(template, f.function_id) else {
        return vec![format!("no resource {}", f.function_id)];
    };
    let role_ref = function.get("Properties").and_then(|p| p.get("Role")).map(referenced_names);
    if role_ref != Some(BTreeSet::from([f.role_id.to_owned()])) {
        problems.push(format!("{} does not use the role {} (Role: {role_ref:?})", f.function_id, f.role_id));
    }
    if resource(template, f.role_id)
        .and_then(|r| r.get("Properties"))
        .and_then(|p| p.get("ManagedPolicyArns"))
        .is_some()
    {
        problems.push(format!(
            "{}: managed policies grant more than the code calls; use inline statements",
            f.role_id
        ));
    }
    let granted = granted_actions(template, f);
    let wanted: BTreeSet<String> =
        code_actions.iter().chain(f.platform.iter().map(|p| &p.action)).map(|s| (*s).to_owned()).collect();
    for a in granted.difference(&wanted) {
        problems.push(format!("{}: {a} is granted but {} never calls it", f.role_id, f.crate_name));
    }
    for a in wanted.difference(&granted) {
        problems.push(format!("{}: {} calls {a} but it is not granted", f.role_id, f.crate_name));
    }
    for s in role_statements(template, f.role_id) {
        for a in s.actions.iter().filter(|a| is_wildcard(a)) {
            problems.push(format!("{}: wildcard action {a:?}", f.role_id));
        }
        if s.effect == "Allow" && s.resources.is_empty() {
            problems.push(format!("{}: {:?} has no Resource", f.role_id, s.actions));
        }
        let unscoped = !s.actions.is_empty()
            && s.actions.iter().all(|a| f.no_resource_type.iter().any(|g| g.action == a.as_str()));
        if s.effect == "Allow"
            && s.actions.iter().any(|a| f.no_resource_type.iter().any(|g| g.action == a.as_str()))
        {
            if !unscoped {
                problems.push(format!(
                    "{}: {:?} mixes actions without a resource type with others; give them a statement of their own",
                    f.role_id, s.actions
                ));
            } else if s.resources != [Value::String("*".into())] {
                problems.push(format!(
                    "{}: {:?} has no resource type, so its Resource must be exactly '*' (not {:?})",
                    f.role_id, s.actions, s.resources
                ));
            }
            continue;
        }
        for r in &s.resources {
            if matches!(r, Value::String(_)) {
                problems.push(format!(
                    "{}: {:?} on the literal resource {r:?}, not one of its own",
                    f.role_id, s.actions
                ));
                continue;
            }
            let names = referenced_names(r);
            if names.is_empty() || !names.iter().all(|n| f.own.contains(&n.as_str())) {
                problems.push(format!(
                    "{}: {:?} on a resource naming {names:?}; its own are {:?}",
                    f.role_id, s.actions, f.own
                ));
            }
        }
    }
    problems
}

/// Environment variable names a function gets from the template.
pub fn environment(template: &Value, function_id: &str) -> BTreeSet<String> {
    let vars = resource(template, function_id)
        .and_then(|r| r.get("Properties"))
        .and_then(|p| p.get("Environment"))
        .and_then(|e| e.get("Variables"))
        .and_then(Value::as_mapping);
    let globals = template
        .get("Globals")
        .and_then(|g| g.get("Function"))
        .and_then(|f| f.get("Environment"))
        .and_then(|e| e.get("Variables"))
        .and_then(Value::as_mapping);
    vars.into_iter()
        .chain(globals)
        .flat_map(|m| m.keys().filter_map(|k| k.as_str().map(str::to_owned)))
        .collect()
}
