//! Rendering: the minijinja templates and static assets, embedded in the
//! binary (no files read at run time, no build step, no CDN).

use std::sync::OnceLock;

use minijinja::Environment;
use serde::Serialize;

use super::views;

/// Templates, by name. HTML auto-escaping is on for every one of them
/// (minijinja's default for names ending in `.html`).
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("macros.html", include_str!("../templates/macros.html")),
    ("login.html", include_str!("../templates/login.html")),
    ("pending.html", include_str!("../templates/pending.html")),
    (
        "proposals.html",
        include_str!("../templates/proposals.html"),
    ),
    ("proposal.html", include_str!("../templates/proposal.html")),
    ("agents.html", include_str!("../templates/agents.html")),
    ("audit.html", include_str!("../templates/audit.html")),
    ("policies.html", include_str!("../templates/policies.html")),
];

/// An embedded asset: its body and content type.
pub struct Asset {
    pub body: &'static str,
    pub content_type: &'static str,
}

/// The asset served at `/assets/{name}`, if there is one.
pub fn asset(name: &str) -> Option<Asset> {
    match name {
        "dashboard.css" => Some(Asset {
            body: include_str!("../assets/dashboard.css"),
            content_type: "text/css; charset=utf-8",
        }),
        "dashboard.js" => Some(Asset {
            body: include_str!("../assets/dashboard.js"),
            content_type: "text/javascript; charset=utf-8",
        }),
        _ => None,
    }
}

/// A template failed to render: a bug in a template, never the user's fault.
#[derive(Debug, thiserror::Error)]
#[error("cannot render the dashboard page `{template}`: {source}")]
pub struct RenderError {
    template: &'static str,
    #[source]
    source: minijinja::Error,
}

fn environment() -> &'static Result<Environment<'static>, minijinja::Error> {
    static ENV: OnceLock<Result<Environment<'static>, minijinja::Error>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.add_filter("urlencode", urlencode);
        for (name, source) in TEMPLATES {
            env.add_template(name, source)?;
        }
        Ok(env)
    })
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so an id
/// is safe as a path segment or a query value.
fn urlencode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn render<T: Serialize>(template: &'static str, page: &T) -> Result<String, RenderError> {
    let env = environment().as_ref().map_err(|e| RenderError {
        template,
        source: minijinja::Error::new(e.kind(), e.to_string()),
    })?;
    env.get_template(template)
        .and_then(|t| t.render(page))
        .map_err(|source| RenderError { template, source })
}

pub fn login(page: &views::LoginPage) -> Result<String, RenderError> {
    render("login.html", page)
}

pub fn pending(page: &views::PendingPage) -> Result<String, RenderError> {
    render("pending.html", page)
}

pub fn history(page: &views::HistoryPage) -> Result<String, RenderError> {
    render("proposals.html", page)
}

pub fn proposal(page: &views::ProposalPage) -> Result<String, RenderError> {
    render("proposal.html", page)
}

pub fn agents(page: &views::AgentsPage) -> Result<String, RenderError> {
    render("agents.html", page)
}

pub fn audit(page: &views::AuditPage) -> Result<String, RenderError> {
    render("audit.html", page)
}

pub fn policies(page: &views::PoliciesPage) -> Result<String, RenderError> {
    render("policies.html", page)
}

#[cfg(test)]
mod tests {
    #[test]
    fn urlencodes_path_segments() {
        assert_eq!(super::urlencode("p-1_a.b~"), "p-1_a.b~");
        assert_eq!(super::urlencode("a/b c?&é"), "a%2Fb%20c%3F%26%C3%A9");
    }
}
