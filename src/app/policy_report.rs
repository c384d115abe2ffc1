//! The review of a policy change as people read it: `gov policy diff` by
//! policy id and `gov policy impact` as text lines or Markdown (for a pull
//! request's comment). The CLI prints them; the dashboard shows the same
//! lines for a `policy_change` proposal.

use crate::app::replay::{ImpactReport, SetSource};
use crate::domain::policy_diff::{Delta, PolicyDiff};

/// The first 12 characters of a commit id.
pub fn short(s: &str) -> &str {
    s.get(..12).unwrap_or(s)
}

fn delta_lines(what: &str, d: &Delta, out: &mut Vec<String>) {
    if d.is_empty() {
        return;
    }
    out.push(format!("{what}:"));
    out.extend(d.added.iter().map(|n| format!("  + {n}")));
    out.extend(d.removed.iter().map(|n| format!("  - {n}")));
    out.extend(d.changed.iter().map(|n| format!("  ~ {n}")));
}

/// The diff as text lines.
pub fn diff_lines(d: &PolicyDiff, from: &SetSource, to: &SetSource) -> Vec<String> {
    let mut out = vec![format!(
        "policy set {from} ({}) -> {to} ({})",
        short(&d.from),
        short(&d.to)
    )];
    if d.is_empty() {
        out.push("no policy, schema or static entity changed".into());
        return out;
    }
    out.push(format!(
        "policies: {} added, {} removed, {} changed",
        d.added.len(),
        d.removed.len(),
        d.changed.len()
    ));
    for p in &d.added {
        out.push(format!(
            "  + {} ({}{}) {}: {}",
            p.id,
            p.effect,
            if p.shadow { ", shadow" } else { "" },
            p.file,
            p.reason
        ));
    }
    for p in &d.removed {
        out.push(format!("  - {} ({}) {}", p.id, p.effect, p.file));
    }
    for c in &d.changed {
        let mut what = Vec::new();
        if let Some((a, b)) = &c.effect {
            what.push(format!("effect {a} -> {b}"));
        }
        if c.condition {
            what.push("scope or conditions changed".to_string());
        }
        for (name, a, b) in &c.annotations {
            what.push(format!("@{name} `{a}` -> `{b}`"));
        }
        out.push(format!("  ~ {}: {}", c.id, what.join("; ")));
    }
    delta_lines("schema entity types", &d.entity_types, &mut out);
    delta_lines("schema actions", &d.actions, &mut out);
    delta_lines("schema common types", &d.common_types, &mut out);
    delta_lines("static entities", &d.entities, &mut out);
    out
}

pub fn responsible(policies: &[String]) -> String {
    if policies.is_empty() {
        "no policy (default deny or an error)".into()
    } else {
        policies
            .iter()
            .map(|p| match p.strip_prefix('-') {
                Some(gone) => format!("no longer `{gone}`"),
                None => format!("`{p}`"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `(the first N shown)` when the report lists fewer failing requests
/// than there are.
fn shown_of(r: &ImpactReport) -> String {
    if (r.failing.len() as u64) < r.failing_total {
        format!(" (the first {} shown)", r.failing.len())
    } else {
        String::new()
    }
}

/// What a replay bounded by [`crate::app::replay::ImpactFilter::max_entries`]
/// left out.
pub fn cut_note(entries: u64) -> String {
    format!("bounded: only the decisions among the newest {entries} audit entries were replayed, older ones were left out")
}

/// The impact report as text lines.
pub fn impact_text(r: &ImpactReport, source: &SetSource) -> Vec<String> {
    let mut out = vec![format!(
        "impact of {source} (policy version {}) on {} recorded decisions: {} change, {} unchanged",
        short(&r.version),
        r.replayed,
        r.changed,
        r.unchanged
    )];
    if let Some(n) = r.cut_at {
        out.push(cut_note(n));
    }
    for (t, n) in &r.transitions {
        out.push(format!("  {t}: {n}"));
    }
    for g in &r.groups {
        out.push(format!(
            "{} → {} by {}: {}",
            g.from,
            g.to,
            responsible(&g.policies),
            g.count
        ));
        for e in &g.examples {
            out.push(format!(
                "  #{} {}{}: {}",
                e.seq,
                e.event_type,
                e.agent_id
                    .as_ref()
                    .map(|a| format!(" agent={a}"))
                    .unwrap_or_default(),
                e.request
            ));
        }
    }
    if !r.failing.is_empty() {
        out.push(format!(
            "requests whose evaluation now fails: {}{}",
            r.failing_total,
            shown_of(r)
        ));
        for (e, errors) in &r.failing {
            out.push(format!("  #{} {}: {}", e.seq, e.request, errors.join("; ")));
        }
    }
    out
}

/// Text for a code span in a table cell: a backtick would end the span and
/// a bar the cell.
fn code_in_table(s: &str) -> String {
    s.replace('`', "'").replace('|', "\\|")
}

/// The impact report as Markdown, to post as a pull-request comment.
pub fn impact_markdown(r: &ImpactReport, source: &SetSource) -> String {
    let mut md = format!(
        "### gov policy impact: {source}\n\nReplayed **{}** recorded decisions against policy version `{}` (shadow policies enforced): **{}** would change, {} unchanged.\n\n",
        r.replayed,
        short(&r.version),
        r.changed,
        r.unchanged
    );
    if let Some(n) = r.cut_at {
        md.push_str(&format!("{}.\n\n", cut_note(n)));
    }
    if !r.groups.is_empty() {
        md.push_str(
            "| from | to | responsible policies | decisions | examples |\n|---|---|---|---|---|\n",
        );
        for g in &r.groups {
            let examples: Vec<String> = g
                .examples
                .iter()
                .map(|e| format!("#{} `{}`", e.seq, code_in_table(&e.request)))
                .collect();
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                g.from,
                g.to,
                responsible(&g.policies),
                g.count,
                examples.join("<br>")
            ));
        }
        md.push('\n');
    }
    if !r.failing.is_empty() {
        md.push_str(&format!(
            "**{} requests would fail to evaluate** (a failure is a deny){}:\n\n",
            r.failing_total,
            shown_of(r)
        ));
        for (e, errors) in &r.failing {
            md.push_str(&format!(
                "- #{} `{}`: {}\n",
                e.seq,
                e.request.replace('`', "'"),
                errors.join("; ")
            ));
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::replay::{Example, Group, ImpactReport, SetSource};
    use crate::domain::policy_diff::diff;
    use crate::domain::policy_diff::tests::{set, AFTER, BEFORE, SCHEMA};
    use crate::domain::request::Outcome;

    #[test]
    fn diff_text_names_each_change_by_policy_id() {
        let d = diff(
            &set(SCHEMA, BEFORE, None, "1111111111111111"),
            &set(SCHEMA, AFTER, None, "working-tree"),
        );
        let main = SetSource::Revision("main".into());
        assert_eq!(
            diff_lines(&d, &main, &SetSource::WorkingTree),
            [
                "policy set `main` (111111111111) -> the working tree (working-tree)",
                "policies: 1 added, 1 removed, 3 changed",
                "  + new (forbid) policies/p.cedar: added",
                "  - gone (forbid) policies/p.cedar",
                "  ~ flips: effect forbid -> permit",
                "  ~ narrowed: scope or conditions changed",
                "  ~ renamed: @mode `-` -> `shadow`; @reason `old reason` -> `new reason`",
            ]
        );
        let same = diff(
            &set(SCHEMA, BEFORE, None, "a"),
            &set(SCHEMA, BEFORE, None, "b"),
        );
        assert_eq!(
            diff_lines(&same, &main, &SetSource::Revision("x".into())),
            [
                "policy set `main` (a) -> `x` (b)",
                "no policy, schema or static entity changed"
            ]
        );
    }

    fn example(seq: u64) -> Example {
        Example {
            seq,
            event_type: "proposal_submitted".into(),
            agent_id: Some("noop".into()),
            request: r#"Agent::"noop" propose ActionType::"research_only""#.into(),
            before: vec!["proposals-allowed".into()],
            after: vec!["ban".into()],
        }
    }

    fn report() -> ImpactReport {
        ImpactReport {
            version: "0123456789abcdef".into(),
            replayed: 6,
            unchanged: 3,
            changed: 3,
            transitions: [("auto → forbidden".to_string(), 3)].into(),
            groups: vec![Group {
                from: Outcome::Auto,
                to: Outcome::Forbidden,
                policies: vec!["ban".into()],
                count: 3,
                examples: vec![example(4), example(5)],
            }],
            failing: vec![(example(6), vec!["evaluation error: overflow".into()])],
            failing_total: 2,
            cut_at: None,
        }
    }

    #[test]
    fn impact_text_and_markdown_of_a_small_report() {
        let rev = SetSource::Revision("gov/policy/ban".into());
        assert_eq!(
            impact_text(&report(), &rev),
            [
                "impact of `gov/policy/ban` (policy version 0123456789ab) on 6 recorded decisions: 3 change, 3 unchanged",
                "  auto → forbidden: 3",
                "auto → forbidden by `ban`: 3",
                r#"  #4 proposal_submitted agent=noop: Agent::"noop" propose ActionType::"research_only""#,
                r#"  #5 proposal_submitted agent=noop: Agent::"noop" propose ActionType::"research_only""#,
                "requests whose evaluation now fails: 2 (the first 1 shown)",
                r#"  #6 Agent::"noop" propose ActionType::"research_only": evaluation error: overflow"#,
            ]
        );
        let md = impact_markdown(&report(), &rev);
        assert_eq!(
            md,
            "### gov policy impact: `gov/policy/ban`\n\n\
             Replayed **6** recorded decisions against policy version `0123456789ab` (shadow policies enforced): **3** would change, 3 unchanged.\n\n\
             | from | to | responsible policies | decisions | examples |\n\
             |---|---|---|---|---|\n\
             | auto | forbidden | `ban` | 3 | #4 `Agent::\"noop\" propose ActionType::\"research_only\"`<br>#5 `Agent::\"noop\" propose ActionType::\"research_only\"` |\n\n\
             **2 requests would fail to evaluate** (a failure is a deny) (the first 1 shown):\n\n\
             - #6 `Agent::\"noop\" propose ActionType::\"research_only\"`: evaluation error: overflow\n"
        );
    }

    /// The cells of every table row the Markdown renders to (GitHub's
    /// table extension).
    fn table_rows(md: &str) -> Vec<Vec<String>> {
        use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
        let mut rows = Vec::new();
        let mut row: Vec<String> = Vec::new();
        let mut cell: Option<String> = None;
        for event in Parser::new_ext(md, Options::ENABLE_TABLES) {
            match event {
                Event::Start(Tag::TableCell) => cell = Some(String::new()),
                Event::End(TagEnd::TableCell) => row.extend(cell.take()),
                Event::End(TagEnd::TableRow | TagEnd::TableHead) => {
                    rows.push(std::mem::take(&mut row))
                }
                Event::Code(c) | Event::Text(c) => {
                    if let Some(cell) = cell.as_mut() {
                        cell.push_str(&c);
                    }
                }
                Event::InlineHtml(h) => {
                    if let Some(cell) = cell.as_mut() {
                        cell.push_str(&h);
                    }
                }
                _ => {}
            }
        }
        rows
    }

    #[test]
    fn the_markdown_renders_as_one_table_row_per_group() {
        let mut r = report();
        // A bar and a backtick in a request do not break the table.
        r.groups[0].examples[1].request = r#"Agent::"a|b" use_tool Tool::"x`y""#.into();
        let rows = table_rows(&impact_markdown(&r, &SetSource::WorkingTree));
        assert_eq!(
            rows,
            [
                vec![
                    "from",
                    "to",
                    "responsible policies",
                    "decisions",
                    "examples"
                ],
                vec![
                    "auto",
                    "forbidden",
                    "ban",
                    "3",
                    r#"#4 Agent::"noop" propose ActionType::"research_only"<br>#5 Agent::"a|b" use_tool Tool::"x'y""#
                ],
            ]
        );
    }
}
