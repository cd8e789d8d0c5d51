//! What the `training-export` CLI prints: the response as JSON, or the status table.

use crate::pipeline::{Outcome, Response};

/// Prints `response` (`status` as a table, everything else as JSON) and returns the
/// process's exit status (see [`Response::exit_code`]).
pub fn print(response: &Response) -> u8 {
    if response.outcome == Outcome::Status {
        print_status(response);
    } else {
        println!("{}", serde_json::to_string_pretty(response).expect("responses serialize"));
    }
    response.exit_code()
}

fn print_status(response: &Response) {
    println!("{:<22} {:<10} {:<9} {:<9} {:>9}  details", "run", "kind", "trigger", "status", "rows");
    for r in &response.runs {
        let details = match (&r.reason, &r.last_error, &r.deployed) {
            (Some(reason), _, _) => format!("{:?}: {reason}", r.step.expect("reasons come with a step")),
            (_, Some(e), _) => format!("waiting; last error: {e}"),
            (_, _, Some(v)) => format!("deployed {v}"),
            _ => String::new(),
        };
        let rows = r.rows.map(|n| n.to_string()).unwrap_or_default();
        println!(
            "{:<22} {:<10} {:<9} {:<9} {:>9}  {details}",
            r.run_id,
            format!("{:?}", r.kind),
            r.trigger,
            r.status,
            rows
        );
    }
    if response.runs.is_empty() {
        println!("no runs yet");
    }
}
