//! Confines a tenant's PromQL to its own namespace, as a label proxy does
//! (prom-label-proxy): every series selector gets `<label>="<namespace>"`, and any
//! matcher the tenant wrote on that label is replaced. Pure: no I/O.
//!
//! The query sent is the parsed query written out again, never the tenant's text with
//! something spliced in (a crafted string could close a selector early). And what is
//! written out is parsed once more and checked: a query whose every selector does not
//! carry exactly the enforced matcher is not sent.

use promql_parser::{
    label::{MatchOp, Matcher},
    parser::{self, Expr, VectorSelector},
};

/// Longest query accepted, in bytes (the CRD's bound on `prometheus.query`, plus room
/// for the names substituted into it).
pub const MAX_QUERY_BYTES: usize = 4 * 1024;

/// Longest query sent: the written-out form can be longer than the tenant's (numbers
/// written in full, names quoted), but not without bound.
const MAX_SENT_BYTES: usize = 4 * MAX_QUERY_BYTES;

/// Stack of the thread that confines a query. The syntax tree nests with every
/// operator (`-x` 4,000 times is 4,000 levels), and the parser's tree is walked,
/// written out and dropped recursively: 4,000 levels overflowed a 2 MiB stack in a
/// debug build, and an overflow aborts the operator. Reserved, not used, memory.
const STACK_BYTES: usize = 64 * 1024 * 1024;

/// Functions whose result reads series the query does not select (`info` joins
/// `target_info` of any namespace): refused, whatever their arguments.
const REFUSED_FUNCTIONS: [&str; 1] = ["info"];

/// Deepest nesting of brackets accepted: the syntax tree is walked, written out and
/// dropped recursively, and a crafted `((((...` must not overflow the operator's stack.
const MAX_DEPTH: usize = 64;

/// `query` with every selector held to `label="value"`, or why it cannot be. Runs on a
/// thread of its own with a stack no query within `MAX_QUERY_BYTES` can exhaust.
pub fn confine(query: &str, label: &str, value: &str) -> Result<String, String> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(format!("the query is longer than {MAX_QUERY_BYTES} bytes"));
    }
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("promql".into())
            .stack_size(STACK_BYTES)
            .spawn_scoped(scope, || confine_here(query, label, value))
            .map_err(|e| format!("no thread to read the query on ({e})"))?
            .join()
            .map_err(|_| "the query could not be read".to_string())?
    })
}

/// How far back from its evaluation time the query reads samples: the longest range
/// (`[10s]`, a subquery's range) plus its offset. The judge starts its samples that far
/// after a step began, so that no sample reads series from before it (pods relabelled
/// from canary to stable keep their old series in a range until it has passed).
/// Negative offsets and `@` read the future or a fixed time: not counted (they are the
/// tenant's choice, and never widen what the query may read).
pub fn reach(query: &str) -> Result<std::time::Duration, String> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(format!("the query is longer than {MAX_QUERY_BYTES} bytes"));
    }
    if depth(query) > MAX_DEPTH {
        return Err(format!("the query nests brackets deeper than {MAX_DEPTH}"));
    }
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("promql".into())
            .stack_size(STACK_BYTES)
            .spawn_scoped(scope, || {
                let expr = parser::parse(query)
                    .map_err(|_| "the query is not PromQL this installation can read".to_string())?;
                Ok(reach_of(&expr))
            })
            .map_err(|e| format!("no thread to read the query on ({e})"))?
            .join()
            .map_err(|_| "the query could not be read".to_string())?
    })
}

fn reach_of(expr: &Expr) -> std::time::Duration {
    use promql_parser::parser::Offset;
    let offset = |o: &Option<Offset>| match o {
        Some(Offset::Pos(d)) => *d,
        _ => std::time::Duration::ZERO,
    };
    match expr {
        Expr::VectorSelector(vs) => offset(&vs.offset),
        Expr::MatrixSelector(ms) => ms.range.saturating_add(offset(&ms.vs.offset)),
        Expr::Aggregate(a) => reach_of(&a.expr).max(a.param.as_deref().map(reach_of).unwrap_or_default()),
        Expr::Unary(u) => reach_of(&u.expr),
        Expr::Binary(b) => reach_of(&b.lhs).max(reach_of(&b.rhs)),
        Expr::Paren(p) => reach_of(&p.expr),
        Expr::Subquery(sq) => reach_of(&sq.expr).saturating_add(sq.range).saturating_add(offset(&sq.offset)),
        Expr::Call(c) => c.args.args.iter().map(|a| reach_of(a)).max().unwrap_or_default(),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => std::time::Duration::ZERO,
    }
}

fn confine_here(query: &str, label: &str, value: &str) -> Result<String, String> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(format!("the query is longer than {MAX_QUERY_BYTES} bytes"));
    }
    if depth(query) > MAX_DEPTH {
        return Err(format!("the query nests brackets deeper than {MAX_DEPTH}"));
    }
    let mut expr =
        parser::parse(query).map_err(|_| "the query is not PromQL this installation can read".to_string())?;
    walk(&mut expr, &mut |vs| hold(vs, label, value))?;
    let confined = expr.to_string();
    if confined.len() > MAX_SENT_BYTES {
        return Err(format!("the query, written out, is longer than {MAX_SENT_BYTES} bytes"));
    }
    // Written out and read back: the enforced matcher must be on every selector.
    let mut again = parser::parse(&confined).map_err(|_| "the confined query does not parse".to_string())?;
    walk(&mut again, &mut |vs| {
        if held(vs, label, value) { Ok(()) } else { Err(format!("a selector of the query escapes the {label} label")) }
    })?;
    Ok(confined)
}

/// The deepest bracket nesting in `text` (brackets inside strings count too: a bound,
/// not a parse).
fn depth(text: &str) -> usize {
    let (mut now, mut deepest) = (0usize, 0usize);
    for c in text.chars() {
        match c {
            '(' | '[' | '{' => {
                now += 1;
                deepest = deepest.max(now);
            }
            ')' | ']' | '}' => now = now.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Calls `each` on every series selector of `expr`, instant and range alike.
fn walk(expr: &mut Expr, each: &mut dyn FnMut(&mut VectorSelector) -> Result<(), String>) -> Result<(), String> {
    match expr {
        Expr::VectorSelector(vs) => each(vs),
        Expr::MatrixSelector(ms) => each(&mut ms.vs),
        Expr::Aggregate(a) => {
            if let Some(param) = a.param.as_mut() {
                walk(param, each)?;
            }
            walk(&mut a.expr, each)
        }
        Expr::Unary(u) => walk(&mut u.expr, each),
        Expr::Binary(b) => {
            walk(&mut b.lhs, each)?;
            walk(&mut b.rhs, each)
        }
        Expr::Paren(p) => walk(&mut p.expr, each),
        Expr::Subquery(s) => walk(&mut s.expr, each),
        Expr::Call(c) if REFUSED_FUNCTIONS.contains(&c.func.name) => {
            Err(format!("{}() reads series the query does not select; it is not allowed in a gate", c.func.name))
        }
        Expr::Call(c) => c.args.args.iter_mut().try_for_each(|arg| walk(arg, each)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Ok(()),
        // The parser never makes these; something unknown is not confined.
        Expr::Extension(_) => Err("the query holds an expression this installation cannot confine".into()),
    }
}

/// The groups of matchers a selector ORs together (`{a="1" or b="2"}`), each of which
/// must carry the enforced matcher.
fn groups(vs: &mut VectorSelector) -> Vec<&mut Vec<Matcher>> {
    let m = &mut vs.matchers;
    if m.or_matchers.is_empty() { vec![&mut m.matchers] } else { m.or_matchers.iter_mut().collect() }
}

fn hold(vs: &mut VectorSelector, label: &str, value: &str) -> Result<(), String> {
    for group in groups(vs) {
        group.retain(|m| m.name != label);
        group.push(Matcher::new(MatchOp::Equal, label, value));
    }
    Ok(())
}

fn held(vs: &mut VectorSelector, label: &str, value: &str) -> bool {
    groups(vs).into_iter().all(|group| {
        let on_label: Vec<&Matcher> = group.iter().filter(|m| m.name == label).collect();
        matches!(on_label.as_slice(), [m] if m.op == MatchOp::Equal && m.value == value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selectors(query: &str) -> Vec<String> {
        let mut expr = parser::parse(query).unwrap();
        let mut found = Vec::new();
        walk(&mut expr, &mut |vs| {
            found.push(vs.to_string());
            Ok(())
        })
        .unwrap();
        found
    }

    #[test]
    fn every_selector_is_held_to_the_namespace() {
        let q = r#"sum(rate(model_requests_total{release="r",code=~"5.."}[30s])) / sum(rate(model_requests_total{release="r"}[30s])) - up"#;
        let out = confine(q, "namespace", "team-a").unwrap();
        let found = selectors(&out);
        assert_eq!(found.len(), 3, "{out}");
        assert!(found.iter().all(|s| s.contains(r#"namespace="team-a""#)), "{out}");
    }

    #[test]
    fn the_tenants_own_namespace_matchers_are_replaced() {
        for q in [
            r#"up{namespace="team-b"}"#,
            r#"up{namespace=~".+"}"#,
            r#"up{namespace!="team-a"}"#,
            r#"{__name__="up",namespace=~"team-.*"}"#,
        ] {
            let out = confine(q, "namespace", "team-a").unwrap();
            assert!(!out.contains("team-b") && !out.contains(".+") && !out.contains("team-.*"), "{q} -> {out}");
            assert!(!out.contains("!="), "{q} -> {out}");
        }
    }

    #[test]
    fn every_or_group_and_every_nested_query_is_held() {
        let out = confine(r#"up{job="a" or job="b"}"#, "namespace", "t").unwrap();
        assert_eq!(out.matches(r#"namespace="t""#).count(), 2, "{out}");
        for q in [
            r#"max_over_time(rate(x[1m])[10m:1m])"#,
            r#"quantile(scalar(y), x)"#,
            r#"label_replace(x, "namespace", "other", "", "")"#,
            r#"-x offset 5m"#,
            r#"count_values("v", x) and on() y"#,
        ] {
            let out = confine(q, "namespace", "t").unwrap();
            for s in selectors(&out) {
                assert!(s.contains(r#"namespace="t""#), "{q} -> {out}");
            }
        }
    }

    #[test]
    fn crafted_strings_cannot_close_a_selector_early() {
        // A value holding `"}` or `up{...`: written out escaped, it stays one value.
        let q = r#"x{job="a\"} or up{x=\""}"#;
        let out = confine(q, "namespace", "t").unwrap();
        assert_eq!(selectors(&out).len(), 1, "{out}");
    }

    #[test]
    fn what_cannot_be_read_is_not_sent() {
        assert!(confine("sum(", "namespace", "t").is_err());
        assert!(confine(&"x+".repeat(10_000), "namespace", "t").is_err());
        // The deepest trees the size allows are confined without overflowing the stack
        // (`-1` folds into a number; `-x` nests).
        assert!(confine(&format!("{}x", "-".repeat(MAX_QUERY_BYTES - 1)), "namespace", "t").is_ok());
        // (Confined, 2,048 selectors outgrow what is sent: refused, not overflowed.)
        let wide = confine(&format!("{}x", "x+".repeat(MAX_QUERY_BYTES / 2 - 1)), "namespace", "t");
        assert!(wide.unwrap_err().contains("written out, is longer than"));
        // Written out longer than it came: a bound too.
        assert!(confine("1e308+".repeat(600).trim_end_matches('+'), "namespace", "t").is_err());
        // A function that reads series nobody selected.
        let info = r#"info(label_replace(up, "instance", "10.0.0.1:9090", "", ""))"#;
        assert!(confine(info, "namespace", "t").unwrap_err().contains("info()"));
        let deep = format!("{}x{}", "(".repeat(1_000), ")".repeat(1_000));
        assert!(confine(&deep, "namespace", "t").unwrap_err().contains("deeper than 64"));
        let fine = format!("{}x{}", "(".repeat(60), ")".repeat(60));
        assert!(confine(&fine, "namespace", "t").is_ok());
        // Literals only: nothing to confine, nothing read.
        assert_eq!(confine("1", "namespace", "t").unwrap(), "1");
    }

    #[test]
    fn the_reach_is_the_longest_range_and_offset() {
        let secs = |q: &str| reach(q).unwrap().as_secs();
        assert_eq!(secs("up"), 0);
        assert_eq!(secs("sum(rate(a[10s])) / sum(rate(b[30s]))"), 30);
        assert_eq!(secs("(sum(rate(a[20s])) or vector(0)) / sum(rate(b[20s] offset 1m))"), 80);
        assert_eq!(secs("max_over_time(rate(a[10s])[1m:5s])"), 70);
        assert!(reach("sum(").is_err());
    }
}
