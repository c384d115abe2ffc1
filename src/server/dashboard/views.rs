//! View models: plain, display-ready data for the templates.
//!
//! Every page is rendered from one of these structs and nothing else, so the
//! templates hold no logic beyond loops and conditions, and the snapshot tests
//! can render any page from fixed data. Building them from the app's types is
//! the job of the route handlers in `dashboard.rs`; formatting (money, times,
//! pretty JSON, percentages) happens here, once.

use serde::Serialize;

use crate::domain::money::Micros;
use crate::domain::policy::PolicyInfo;

/// What every page shares: its title, the active tab, the session's CSRF
/// token for the forms, a one-shot message after a form was sent, and a
/// warning when a newer policy set was refused.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Layout {
    pub title: String,
    /// One of `pending`, `proposals`, `agents`, `audit`, `policies`.
    pub active: String,
    pub csrf: String,
    pub operator: String,
    pub flash: Option<Flash>,
    pub policy_warning: Option<String>,
    /// Why writes are refused when the audit chain was tampered with.
    pub tampered: Option<String>,
    /// The Git remote's line, when one is configured.
    pub remote: Option<RemoteView>,
}

/// The remote: its last sync and what waits to be pushed.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteView {
    pub name: String,
    pub url: String,
    /// `ok`, `error` (the last sync failed) or `never`.
    pub state: String,
    pub last_sync: String,
    pub waiting: String,
}

/// A short message shown once after a form was sent.
#[derive(Debug, Clone, Serialize)]
pub struct Flash {
    /// `ok` or `error`.
    pub kind: String,
    pub message: String,
}

impl Flash {
    pub fn ok(message: impl Into<String>) -> Self {
        Flash {
            kind: "ok".into(),
            message: message.into(),
        }
    }
    pub fn error(message: impl Into<String>) -> Self {
        Flash {
            kind: "error".into(),
            message: message.into(),
        }
    }
}

/// A policy cited by a decision, with the reason it gives.
#[derive(Debug, Clone, Serialize)]
pub struct Citation {
    pub id: String,
    pub reason: String,
    /// `permit` or `forbid`, when the decision recorded it.
    pub effect: Option<String>,
}

/// How a proposal was decided, once it was.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionView {
    pub decision: String,
    pub by: String,
    pub at: String,
    pub note: Option<String>,
    pub is_final: bool,
}

/// One proposal, with everything a person needs to decide it.
#[derive(Debug, Clone, Serialize)]
pub struct ProposalView {
    pub id: String,
    pub agent_id: String,
    pub action_type: String,
    pub status: String,
    pub submitted_at: String,
    pub expires_at: Option<String>,
    /// The payload as indented JSON.
    pub payload_pretty: String,
    pub payload_hash: String,
    pub expected_outcome: Option<String>,
    pub cost_tokens: Option<u64>,
    /// Dollars, formatted (`$1.50`).
    pub cost_dollars: Option<String>,
    pub reversible: bool,
    pub rationale: Option<String>,
    pub links: Vec<String>,
    /// The policies that decided where it went (for a pending proposal:
    /// why it needs a person).
    pub policies: Vec<Citation>,
    pub branch: Option<String>,
    pub commit: Option<String>,
    pub decision: Option<DecisionView>,
    /// A `policy_change` proposal's diff and impact report.
    pub review: Option<PolicyReviewView>,
    /// What shadow policies would have done to its submission
    /// (`would be forbidden by ban-x (decided auto)`).
    pub shadow: Option<String>,
}

/// A proposed policy change as a reviewer sees it: what it changes by
/// policy id (as `gov policy diff`) and by file, and what it would do to
/// the recorded decisions (as `gov policy impact`).
#[derive(Debug, Clone, Serialize)]
pub struct PolicyReviewView {
    /// `gov/policy/<id>`.
    pub branch: String,
    /// `main` when it was proposed, and the change's commit.
    pub base: String,
    pub commit: String,
    pub changed: Vec<String>,
    pub deleted: Vec<String>,
    pub diff: Vec<String>,
    pub impact: Vec<String>,
    /// The proposed set loads and validates.
    pub valid: bool,
    /// One line: how many recorded decisions it changes, or that the set
    /// is invalid.
    pub verdict: String,
}

impl ProposalView {
    /// Pretty JSON for a payload; a payload that cannot be printed is shown
    /// as its compact form rather than hidden.
    pub fn pretty(payload: &serde_json::Value) -> String {
        serde_json::to_string_pretty(payload).unwrap_or_else(|_| payload.to_string())
    }

    /// Dollars for display.
    pub fn dollars(amount: Micros) -> String {
        amount.to_string()
    }
}

impl From<&crate::app::policy_change::Review> for PolicyReviewView {
    fn from(r: &crate::app::policy_change::Review) -> Self {
        let verdict = match (r.valid, r.changes) {
            (false, _) => {
                "the proposed policy set is invalid: it cannot come into force".to_string()
            }
            (true, Some(0)) => "no recorded decision would change".to_string(),
            (true, Some(1)) => "1 recorded decision would change".to_string(),
            (true, Some(n)) => format!("{n} recorded decisions would change"),
            (true, None) => "the impact could not be replayed".to_string(),
        };
        PolicyReviewView {
            branch: r.branch.clone(),
            base: r.base.chars().take(12).collect(),
            commit: r.commit.chars().take(12).collect(),
            changed: r.changed.clone(),
            deleted: r.deleted.clone(),
            diff: r.diff.clone(),
            impact: r.impact.clone(),
            valid: r.valid,
            verdict,
        }
    }
}

impl PolicyReviewView {
    /// A review that could not be computed, and why.
    pub fn failed(why: &str) -> Self {
        PolicyReviewView {
            branch: String::new(),
            base: String::new(),
            commit: String::new(),
            changed: vec![],
            deleted: vec![],
            diff: vec![],
            impact: vec![],
            valid: false,
            verdict: format!("the review could not be computed: {why}"),
        }
    }
}

/// `/`: the proposals waiting for a person.
#[derive(Debug, Clone, Serialize)]
pub struct PendingPage {
    pub layout: Layout,
    pub proposals: Vec<ProposalView>,
}

/// A filter's current value and the values it can take.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Filter {
    pub name: String,
    pub label: String,
    pub value: String,
    pub options: Vec<String>,
}

/// `/proposals`: every proposal, newest first, filtered.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryPage {
    pub layout: Layout,
    pub filters: Vec<Filter>,
    pub proposals: Vec<ProposalView>,
}

/// `/proposals/{id}`: one proposal and its audit entries.
#[derive(Debug, Clone, Serialize)]
pub struct ProposalPage {
    pub layout: Layout,
    pub proposal: ProposalView,
    pub audit: Vec<AuditRow>,
}

/// Spend against a cap, ready to draw as a bar.
#[derive(Debug, Clone, Serialize)]
pub struct Meter {
    pub used: String,
    pub cap: String,
    /// Share of the cap used, 0 to 100, for the bar's width.
    pub pct: u8,
    /// `ok`, `warning` (under 25% left) or `over`.
    pub level: String,
}

impl Meter {
    /// A meter from integer amounts (tokens, micro-dollars) and how to show them.
    pub fn new(used: i64, cap: i64, show: impl Fn(i64) -> String) -> Meter {
        let pct = if cap <= 0 {
            100
        } else {
            ((used.max(0) as i128 * 100) / cap as i128).clamp(0, 100) as u8
        };
        let level = if cap > 0 && used >= cap {
            "over"
        } else if pct > 75 {
            "warning"
        } else {
            "ok"
        };
        Meter {
            used: show(used),
            cap: show(cap),
            pct,
            level: level.into(),
        }
    }

    pub fn tokens(used: u64, cap: u64) -> Meter {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Meter::new(clamp(used), clamp(cap), group_thousands)
    }

    pub fn dollars(used: Micros, cap: Micros) -> Meter {
        Meter::new(used.0, cap.0, |v| Micros(v).to_string())
    }
}

/// `12345` as `12,345`.
pub fn group_thousands(v: i64) -> String {
    let digits = v.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if v < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Spend against the dollar cap over the budget period, drawn as an inline
/// SVG: a step line of cumulative spend, a dashed line at the cap.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SpendChart {
    pub width: u32,
    pub height: u32,
    /// The step line's points, `x,y x,y …`, in the SVG's user units.
    pub points: String,
    /// Where the cap's line is drawn (the cap is the top when it is the
    /// larger of the cap and the spend).
    pub cap_y: u32,
    /// `$1.20 of $50.00 over 7 charges`.
    pub summary: String,
}

impl SpendChart {
    pub const WIDTH: u32 = 240;
    pub const HEIGHT: u32 = 60;

    /// From the period's charges in the order they were recorded (time as
    /// Unix seconds, micro-dollars), drawn from `from` (the first charge's
    /// time when `None`) to `now`.
    pub fn new(charges: &[(i64, i64)], cap: Micros, from: Option<i64>, now: i64) -> SpendChart {
        let (w, h) = (i64::from(Self::WIDTH), i64::from(Self::HEIGHT));
        let start = from
            .or_else(|| charges.first().map(|c| c.0))
            .unwrap_or(now)
            .min(now);
        let span = (now - start).max(1);
        let total: i64 = charges.iter().map(|c| c.1.max(0)).sum();
        let top = total.max(cap.0).max(1);
        let x = |t: i64| ((t.clamp(start, now) - start) * w / span).clamp(0, w);
        let y = |m: i64| h - (m.clamp(0, top) * h / top);
        let mut points = vec![format!("0,{h}")];
        let mut sum = 0;
        for (t, m) in charges {
            let px = x(*t);
            points.push(format!("{px},{}", y(sum)));
            sum += m.max(&0);
            points.push(format!("{px},{}", y(sum)));
        }
        points.push(format!("{w},{}", y(sum)));
        let n = charges.len();
        SpendChart {
            width: Self::WIDTH,
            height: Self::HEIGHT,
            points: points.join(" "),
            cap_y: u32::try_from(y(cap.0)).unwrap_or(0),
            summary: format!(
                "{} of {} over {n} charge{}",
                Micros(total),
                cap,
                if n == 1 { "" } else { "s" }
            ),
        }
    }
}

/// An open reservation: a run under way or an approved proposal's
/// expected cost.
#[derive(Debug, Clone, Serialize)]
pub struct ReservationView {
    /// `run` or `proposal`.
    pub kind: String,
    pub id: String,
    /// What it still holds.
    pub tokens: String,
    pub dollars: String,
    /// When a run's reservation stops holding.
    pub until: Option<String>,
}

/// One agent's state.
#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    pub id: String,
    /// `ok`, `warning` or `paused`.
    pub status: String,
    pub paused_reason: Option<String>,
    pub tokens: Meter,
    pub dollars: Meter,
    /// `lifetime`, `daily`, `monthly`.
    pub period: String,
    pub last_seen: Option<String>,
    pub runs: u64,
    pub proposals: u64,
    /// Spend against the dollar cap over the period.
    pub chart: SpendChart,
    pub reservations: Vec<ReservationView>,
}

/// `/agents`.
#[derive(Debug, Clone, Serialize)]
pub struct AgentsPage {
    pub layout: Layout,
    pub agents: Vec<AgentView>,
}

/// An audit entry's signature, as checked when it was read.
#[derive(Debug, Clone, Serialize)]
pub struct SignatureView {
    /// `verified`, `unsigned`, `bad` or `unknown`.
    pub status: String,
    /// The signer's role (`server`, `watchdog`, `approver`) when verified.
    pub role: Option<String>,
    pub detail: Option<String>,
}

/// One audit entry as a row.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    pub seq: u64,
    pub ts: String,
    pub actor: String,
    pub agent_id: Option<String>,
    pub event_type: String,
    pub proposal_id: Option<String>,
    pub task_id: Option<String>,
    /// The payload as compact JSON, for a one-line summary.
    pub payload: String,
    pub signature: SignatureView,
    pub commit: Option<String>,
    /// What the shadow policies would have done to the entry's decision
    /// (`would be forbidden by ban-x (decided auto)`).
    pub shadow: Option<String>,
}

/// The result of verifying the whole chain.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyView {
    pub ok: bool,
    pub entries: u64,
    pub summary: String,
    pub problems: Vec<String>,
}

/// `/audit`.
#[derive(Debug, Clone, Serialize)]
pub struct AuditPage {
    pub layout: Layout,
    pub filters: Vec<Filter>,
    pub entries: Vec<AuditRow>,
    pub verify: Option<VerifyView>,
}

/// One policy of the set in force.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyView {
    pub id: String,
    pub reason: Option<String>,
    /// `permit` or `forbid`.
    pub effect: String,
    pub file: String,
    pub text: String,
}

impl From<&PolicyInfo> for PolicyView {
    fn from(p: &PolicyInfo) -> Self {
        PolicyView {
            id: p.id.clone(),
            reason: Some(p.reason.clone()).filter(|r| !r.is_empty()),
            effect: p.effect.clone(),
            file: format!("{}:{}", p.file, p.line),
            text: p.text.clone(),
        }
    }
}

/// `/policies`.
#[derive(Debug, Clone, Serialize)]
pub struct PoliciesPage {
    pub layout: Layout,
    /// The commit on `main` the set was loaded from.
    pub version: String,
    pub policies: Vec<PolicyView>,
    /// Why a newer set on `main` was not loaded, if one was refused.
    pub refused: Option<String>,
    /// Commits on `main` that change governed paths without authorization:
    /// not in force.
    pub unauthorized: Vec<crate::app::service::Refusal>,
}

/// What a visitor without a session sees.
#[derive(Debug, Clone, Serialize)]
pub struct LoginPage {
    pub title: String,
    /// Why they are here (`the link was already used or has expired`, ...).
    pub problem: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meters_clamp_and_grade() {
        let m = Meter::tokens(150_000, 200_000);
        assert_eq!((m.pct, m.level.as_str()), (75, "ok"));
        assert_eq!(m.used, "150,000");
        let m = Meter::tokens(190_000, 200_000);
        assert_eq!(m.level, "warning");
        let m = Meter::dollars(Micros(60_000_000), Micros(50_000_000));
        assert_eq!((m.pct, m.level.as_str()), (100, "over"));
        assert_eq!(m.cap, "$50.00");
        let m = Meter::tokens(0, 0);
        assert_eq!(m.pct, 100);
    }

    #[test]
    fn the_spend_chart_steps_up_at_each_charge_and_draws_the_cap() {
        // $0.20 at t=100 and $0.30 at t=150 against a $1 cap, drawn from
        // t=0 to t=200 on 240 x 60.
        let c = SpendChart::new(
            &[(100, 200_000), (150, 300_000)],
            Micros(1_000_000),
            Some(0),
            200,
        );
        assert_eq!(c.points, "0,60 120,60 120,48 180,48 180,30 240,30");
        assert_eq!(c.cap_y, 0);
        assert_eq!(c.summary, "$0.50 of $1.00 over 2 charges");
        // Over the cap: the spend is the top, the cap below it.
        let c = SpendChart::new(&[(10, 2_000_000)], Micros(1_000_000), None, 10);
        assert_eq!((c.points.as_str(), c.cap_y), ("0,60 0,60 0,0 240,0", 30));
        let empty = SpendChart::new(&[], Micros(0), None, 5);
        assert_eq!(empty.summary, "$0.00 of $0.00 over 0 charges");
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1,000");
        assert_eq!(group_thousands(-1234567), "-1,234,567");
    }
}
