//! `gov.toml` and `agents/<id>/agent.toml`: the raw files, parsed with
//! unknown fields refused, and the resolved settings with defaults and paths
//! filled in once.
//!
//! The example `gov.toml` that `gov init` writes (`defaults/gov.toml`) is the
//! same file the defaults below are checked against in tests.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::domain::money::{Micros, MoneyError};
use crate::domain::pricing::{ModelPrice, Prices};

/// A number of dollars as written in a TOML file: `50`, `0.015` or `"0.015"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawDollars {
    Int(i64),
    Float(f64),
    Text(String),
}

impl RawDollars {
    pub fn to_micros(&self) -> Result<Micros, MoneyError> {
        match self {
            RawDollars::Int(i) => Micros::from_dollars_str(&i.to_string()),
            RawDollars::Float(f) => Micros::from_dollars_f64(*f),
            RawDollars::Text(s) => Micros::from_dollars_str(s),
        }
    }
}

/// Budget caps and periods are the domain's (its ledger decides with
/// them); gov.toml and agent.toml resolve into them.
pub use crate::domain::budget::{BudgetSettings, Period};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentAuth {
    #[default]
    Required,
    Optional,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGovToml {
    #[serde(default)]
    pub repo: RawRepo,
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub budget: RawBudget,
    #[serde(default)]
    pub watchdog: RawWatchdog,
    #[serde(default)]
    pub signers: RawSigners,
    #[serde(default)]
    pub remote: RawRemote,
    /// Token prices per model, in dollars per million tokens.
    #[serde(default)]
    pub prices: std::collections::BTreeMap<String, RawPrice>,
    #[serde(default)]
    pub runner: RawRunner,
    #[serde(default)]
    pub hook: RawHook,
}

/// The longest wait for a person the hook accepts (a day).
pub const MAX_APPROVAL_WAIT_SECONDS: u64 = 24 * 60 * 60;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHook {
    pub approval_wait_seconds: Option<u64>,
}

/// One model's prices in dollars per million tokens: numbers or decimal
/// strings (`"3.75"`), parsed exactly.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    pub input: RawDollars,
    pub output: RawDollars,
    pub cache_write: RawDollars,
    pub cache_read: RawDollars,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRepo {
    pub main_branch: Option<String>,
    pub audit_ref: Option<String>,
    pub proposal_prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub port: Option<u16>,
    pub agent_auth: Option<AgentAuth>,
    pub agent_token_ttl_hours: Option<u32>,
    pub header_read_timeout_seconds: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    pub tokens_cap: Option<u64>,
    pub dollars_cap: Option<RawDollars>,
    pub dollars_per_1k_tokens: Option<RawDollars>,
    pub period: Option<Period>,
    /// What one run reserves at admission, and may spend before it is stopped.
    pub run_tokens: Option<u64>,
    pub run_dollars: Option<RawDollars>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWatchdog {
    pub interval_seconds: Option<u64>,
    pub stuck_after_minutes: Option<u64>,
    pub repeat_payload_count: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSigners {
    pub server_key: Option<PathBuf>,
    pub watchdog_key: Option<PathBuf>,
    pub operator_key: Option<PathBuf>,
    pub operator_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRemote {
    pub name: Option<String>,
    pub webhook_secret_file: Option<PathBuf>,
    pub timeout_seconds: Option<u64>,
    pub forge: Option<RawForge>,
}

/// Which forge API `gov sync` speaks to open pull requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForgeKind {
    Github,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForge {
    pub kind: ForgeKind,
    pub api_url: Option<String>,
    /// `owner/name`.
    pub repo: String,
    pub token_env: Option<String>,
    pub labels: Option<Vec<String>>,
    pub dashboard_url: Option<String>,
    /// Present only to refuse it with a clear message: the token never
    /// lives in `gov.toml`.
    pub token: Option<toml::Value>,
}

/// The forge that `gov sync` opens pull requests on (`[remote.forge]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgeSettings {
    pub kind: ForgeKind,
    /// Without a final `/`, e.g. `https://api.github.com`.
    pub api_url: String,
    pub owner: String,
    pub repo: String,
    /// The environment variable that holds the token; when it is unset,
    /// `git credential fill` is asked for the API's host.
    pub token_env: String,
    pub labels: Vec<String>,
    /// Where the dashboard is reachable for the people who review pull
    /// requests (the link back in each pull request's body).
    pub dashboard_url: Option<String>,
}

fn resolve_forge(raw: RawForge) -> Result<ForgeSettings, String> {
    if raw.token.is_some() {
        return Err("forge: `token` is never read from gov.toml; put it in the environment variable named by `token_env` (default `GOV_FORGE_TOKEN`) or in a git credential helper".into());
    }
    let (owner, repo) = raw
        .repo
        .split_once('/')
        .filter(|(o, r)| !o.is_empty() && !r.is_empty() && !r.contains('/'))
        .ok_or_else(|| format!("forge: `repo` must be `owner/name`, not `{}`", raw.repo))?;
    let api_url = raw
        .api_url
        .unwrap_or_else(|| "https://api.github.com".into())
        .trim_end_matches('/')
        .to_string();
    if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
        return Err(format!(
            "forge: `api_url` must be an http or https URL, not `{api_url}`"
        ));
    }
    Ok(ForgeSettings {
        kind: raw.kind,
        api_url,
        owner: owner.to_string(),
        repo: repo.to_string(),
        token_env: raw.token_env.unwrap_or_else(|| "GOV_FORGE_TOKEN".into()),
        labels: raw.labels.unwrap_or_else(|| vec!["gov".into()]),
        dashboard_url: raw
            .dashboard_url
            .map(|u| u.trim_end_matches('/').to_string()),
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRunner {
    pub sandbox: Option<SandboxMode>,
    #[serde(default)]
    pub sandbox_read: Vec<PathBuf>,
    #[serde(default)]
    pub sandbox_write: Vec<PathBuf>,
}

/// Whether `gov run` confines its agents (`[runner] sandbox`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// Every agent runs confined; where the kernel cannot confine it, no
    /// agent runs.
    #[default]
    Required,
    /// Agents run with every right of the operator's user. Said on every run.
    Off,
}

/// How `gov run` confines agents, resolved: extra paths are absolute.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunnerSettings {
    pub sandbox: SandboxMode,
    /// Readable (and executable) for every agent, besides the defaults.
    pub sandbox_read: Vec<PathBuf>,
    /// Writable for every agent, besides its folder and its temporary one.
    pub sandbox_write: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogSettings {
    pub interval_seconds: u64,
    pub stuck_after_minutes: u64,
    pub repeat_payload_count: u32,
}

/// How long an operator-minted agent token lives unless `gov.toml` says
/// otherwise (`[server] agent_token_ttl_hours`): 30 days.
pub const DEFAULT_AGENT_TOKEN_TTL_HOURS: u32 = 720;

/// How long a client may take to send a request head, or stay idle
/// between requests, unless `gov.toml` says otherwise.
pub const DEFAULT_HEADER_READ_TIMEOUT_SECONDS: u32 = 10;

/// Everything `gov.toml` says, with defaults applied and paths made absolute.
#[derive(Debug, Clone)]
pub struct Settings {
    pub root: PathBuf,
    pub main_branch: String,
    pub audit_ref: String,
    pub proposal_prefix: String,
    pub port: u16,
    pub agent_auth: AgentAuth,
    /// How long an agent token the operator mints stays valid.
    pub agent_token_ttl_hours: u32,
    /// A connection that has not sent a whole request head within this
    /// time (a new one, or an idle kept-alive one) is closed.
    pub header_read_timeout: std::time::Duration,
    pub budget: BudgetSettings,
    pub watchdog: WatchdogSettings,
    pub server_key: PathBuf,
    pub watchdog_key: PathBuf,
    pub operator_key: PathBuf,
    pub operator_name: String,
    pub remote: Option<String>,
    pub webhook_secret_file: PathBuf,
    /// Token prices per model (micro-dollars per million tokens).
    pub model_prices: std::collections::BTreeMap<String, ModelPrice>,
    /// How long one `git fetch` or `git push` may take.
    pub remote_timeout_seconds: u64,
    pub forge: Option<ForgeSettings>,
    /// How long the PreToolUse hook waits for a person (0: deny at once).
    pub approval_wait_seconds: u64,
    pub runner: RunnerSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{path}` is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Parses a TOML file into its raw struct. The error is one line that
/// names where: `line N`, and the key (`server.port`) when a value has the
/// wrong type or is not allowed.
fn parse_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let line = inner
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let message = inner.message().trim().replace('\n', ": ");
        match (line, path.as_str()) {
            (Some(l), "." | "") => format!("line {l}: {message}"),
            (Some(l), key) => format!("line {l}: `{key}`: {message}"),
            (None, "." | "") => message,
            (None, key) => format!("`{key}`: {message}"),
        }
    })
}

impl Settings {
    /// The directory that holds local, git-ignored state.
    pub fn local_dir(&self) -> PathBuf {
        self.root.join(".gov")
    }
    pub fn index_path(&self) -> PathBuf {
        self.local_dir().join("index.sqlite")
    }
    pub fn operator_token_path(&self) -> PathBuf {
        self.local_dir().join("operator-token")
    }
    pub fn runner_token_path(&self) -> PathBuf {
        self.local_dir().join("runner-token")
    }
    pub fn policies_dir(&self) -> PathBuf {
        self.root.join("policies")
    }
    pub fn agents_dir(&self) -> PathBuf {
        self.root.join("agents")
    }
    pub fn allowed_signers_path(&self) -> PathBuf {
        self.policies_dir().join("allowed_signers")
    }
    /// The full name of the audit ref, e.g. `refs/heads/gov/audit`.
    pub fn audit_refname(&self) -> String {
        format!("refs/heads/{}", self.audit_ref)
    }
    pub fn main_refname(&self) -> String {
        format!("refs/heads/{}", self.main_branch)
    }
    /// The price table for an agent's budget (its flat rate per 1,000
    /// tokens for tokens of no priced model).
    pub fn prices(&self, budget: &BudgetSettings) -> Prices {
        Prices {
            models: self.model_prices.clone(),
            per_1k_tokens: budget.dollars_per_1k_tokens,
        }
    }

    /// Reads `gov.toml` at the root of a governance repository. A missing file
    /// is an error: it is what marks the folder as one.
    pub fn load(root: &Path) -> Result<Settings, ConfigError> {
        let path = root.join("gov.toml");
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        tracing::debug!(path = %path.display(), "reading settings");
        Self::from_toml(root, &path, &text)
    }

    pub fn from_toml(root: &Path, path: &Path, text: &str) -> Result<Settings, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let raw: RawGovToml = parse_toml(text).map_err(invalid)?;
        let budget = resolve_budget(&BudgetSettings::default(), &raw.budget)
            .map_err(|e| invalid(format!("budget: {e}")))?;
        let model_prices = resolve_prices(&raw.prices).map_err(invalid)?;
        let abs = |p: Option<PathBuf>, default: &str| {
            let p = p.unwrap_or_else(|| PathBuf::from(default));
            if p.is_absolute() {
                p
            } else {
                root.join(p)
            }
        };
        let port = raw.server.port.unwrap_or(8005);
        let forge = raw
            .remote
            .forge
            .map(resolve_forge)
            .transpose()
            .map_err(invalid)?;
        let watchdog = WatchdogSettings {
            interval_seconds: raw.watchdog.interval_seconds.unwrap_or(30).max(1),
            stuck_after_minutes: raw.watchdog.stuck_after_minutes.unwrap_or(30).max(1),
            repeat_payload_count: raw.watchdog.repeat_payload_count.unwrap_or(3).max(2),
        };
        Ok(Settings {
            root: root.to_path_buf(),
            main_branch: raw.repo.main_branch.unwrap_or_else(|| "main".into()),
            audit_ref: raw.repo.audit_ref.unwrap_or_else(|| "gov/audit".into()),
            proposal_prefix: raw
                .repo
                .proposal_prefix
                .unwrap_or_else(|| "gov/proposal/".into()),
            port,
            agent_auth: raw.server.agent_auth.unwrap_or_default(),
            agent_token_ttl_hours: raw
                .server
                .agent_token_ttl_hours
                .unwrap_or(DEFAULT_AGENT_TOKEN_TTL_HOURS),
            header_read_timeout: std::time::Duration::from_secs(u64::from(
                raw.server
                    .header_read_timeout_seconds
                    .unwrap_or(DEFAULT_HEADER_READ_TIMEOUT_SECONDS)
                    .max(1),
            )),
            budget,
            watchdog,
            server_key: abs(raw.signers.server_key, ".gov/keys/server"),
            watchdog_key: abs(raw.signers.watchdog_key, ".gov/keys/watchdog"),
            operator_key: abs(raw.signers.operator_key, ".gov/keys/operator"),
            operator_name: raw
                .signers
                .operator_name
                .unwrap_or_else(|| "operator".into()),
            remote: raw.remote.name.filter(|n| !n.is_empty()),
            webhook_secret_file: abs(raw.remote.webhook_secret_file, ".gov/webhook-secret"),
            model_prices,
            remote_timeout_seconds: raw.remote.timeout_seconds.unwrap_or(120).max(1),
            forge,
            approval_wait_seconds: raw
                .hook
                .approval_wait_seconds
                .unwrap_or(0)
                .min(MAX_APPROVAL_WAIT_SECONDS),
            runner: RunnerSettings {
                sandbox: raw.runner.sandbox.unwrap_or_default(),
                sandbox_read: raw
                    .runner
                    .sandbox_read
                    .iter()
                    .map(|p| root.join(p))
                    .collect(),
                sandbox_write: raw
                    .runner
                    .sandbox_write
                    .iter()
                    .map(|p| root.join(p))
                    .collect(),
            },
        })
    }

    /// These settings with the enforcement settings (`[budget]`,
    /// `[watchdog]`, `[server] agent_auth`) of another `gov.toml` text: the
    /// one in force on `main`.
    pub fn with_enforcement_of(&self, path: &Path, text: &str) -> Result<Settings, ConfigError> {
        let other = Settings::from_toml(&self.root, path, text)?;
        Ok(Settings {
            budget: other.budget,
            watchdog: other.watchdog,
            agent_auth: other.agent_auth,
            ..self.clone()
        })
    }

    /// Finds the governance repository that contains `start`: the nearest
    /// ancestor with a `gov.toml`.
    pub fn discover(start: &Path) -> Option<PathBuf> {
        start
            .ancestors()
            .find(|d| d.join("gov.toml").is_file())
            .map(Path::to_path_buf)
    }
}

/// Resolves `[prices."MODEL"]` tables: every price non-negative, exact.
fn resolve_prices(
    raw: &std::collections::BTreeMap<String, RawPrice>,
) -> Result<std::collections::BTreeMap<String, ModelPrice>, String> {
    let mut out = std::collections::BTreeMap::new();
    for (model, p) in raw {
        if model.trim().is_empty() {
            return Err("prices: a model name must not be empty".into());
        }
        let get = |d: &RawDollars, what: &str| -> Result<Micros, String> {
            let m = d
                .to_micros()
                .map_err(|e| format!("prices.`{model}`.{what}: {e}"))?;
            if m.0 < 0 {
                return Err(format!("prices.`{model}`.{what}: must not be negative"));
            }
            Ok(m)
        };
        out.insert(
            model.clone(),
            ModelPrice {
                input: get(&p.input, "input")?,
                output: get(&p.output, "output")?,
                cache_write: get(&p.cache_write, "cache_write")?,
                cache_read: get(&p.cache_read, "cache_read")?,
            },
        );
    }
    Ok(out)
}

/// Applies a `[budget]` table over a base (the defaults, or `gov.toml`'s).
pub fn resolve_budget(base: &BudgetSettings, raw: &RawBudget) -> Result<BudgetSettings, String> {
    let money = |v: &Option<RawDollars>, base: Micros, name: &str| -> Result<Micros, String> {
        match v {
            None => Ok(base),
            Some(d) => {
                let m = d.to_micros().map_err(|e| format!("{name}: {e}"))?;
                if m.0 < 0 {
                    Err(format!("{name}: must not be negative"))
                } else {
                    Ok(m)
                }
            }
        }
    };
    Ok(BudgetSettings {
        tokens_cap: raw.tokens_cap.unwrap_or(base.tokens_cap),
        dollars_cap: money(&raw.dollars_cap, base.dollars_cap, "dollars_cap")?,
        dollars_per_1k_tokens: money(
            &raw.dollars_per_1k_tokens,
            base.dollars_per_1k_tokens,
            "dollars_per_1k_tokens",
        )?,
        period: raw.period.unwrap_or(base.period),
        run_tokens: raw.run_tokens.unwrap_or(base.run_tokens),
        run_dollars: money(&raw.run_dollars, base.run_dollars, "run_dollars")?,
    })
}

/// What kind of program an agent is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentKind {
    Command,
    Claude,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgentToml {
    pub kind: AgentKind,
    pub description: Option<String>,
    /// A label policies can match on (`principal.group`).
    pub group: Option<String>,
    pub wallclock_seconds: Option<u64>,
    #[serde(default)]
    pub budget: RawBudget,
    pub command: Option<RawCommand>,
    pub claude: Option<RawClaude>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCommand {
    pub program: String,
    #[serde(default)]
    pub args: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClaude {
    pub model: Option<String>,
    pub max_budget_usd: Option<RawDollars>,
    pub prompt_file: Option<String>,
}

/// One agent's settings, resolved against `gov.toml`.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub id: String,
    pub dir: PathBuf,
    pub kind: AgentKind,
    pub description: String,
    pub group: String,
    pub wallclock_seconds: u64,
    pub budget: BudgetSettings,
    pub command: Option<(String, Vec<String>)>,
    pub claude_model: Option<String>,
    pub claude_max_budget: Option<Micros>,
    pub claude_prompt_file: String,
}

/// An agent id is a folder name and appears in Cedar ids and Git ref names:
/// keep it to a safe alphabet.
pub fn valid_agent_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !id.starts_with('-')
}

impl AgentSettings {
    /// Reads `agents/<id>/agent.toml` from the working tree. The agents in
    /// force are those on `main` (`store::agents::agents_at`); this is for
    /// folders outside a Git repository and for comparing the working tree
    /// with main.
    pub fn load(settings: &Settings, id: &str) -> Result<AgentSettings, ConfigError> {
        let path = settings.agents_dir().join(id).join("agent.toml");
        if !valid_agent_id(id) {
            return Err(ConfigError::Invalid {
                path,
                message: format!("`{id}` is not a valid agent id (letters, digits, `-` and `_`)"),
            });
        }
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        Self::parse(settings, id, &text, &path)
    }

    /// Parses the text of an agent's `agent.toml` (from the working tree or
    /// from a commit), resolved against `gov.toml`. `path` names the file in
    /// messages; the agent's folder is always the working-tree one, where
    /// the runner executes its files.
    pub fn parse(
        settings: &Settings,
        id: &str,
        text: &str,
        path: &Path,
    ) -> Result<AgentSettings, ConfigError> {
        let dir = settings.agents_dir().join(id);
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        if !valid_agent_id(id) {
            return Err(invalid(format!(
                "`{id}` is not a valid agent id (letters, digits, `-` and `_`)"
            )));
        }
        let raw: RawAgentToml = parse_toml(text).map_err(invalid)?;
        let budget = resolve_budget(&settings.budget, &raw.budget)
            .map_err(|e| invalid(format!("budget: {e}")))?;
        let command = match (raw.kind, raw.command) {
            (AgentKind::Command, Some(c)) => Some((c.program, c.args)),
            (AgentKind::Command, None) => {
                return Err(invalid(
                    "kind `command` needs a [command] table with `program`".into(),
                ))
            }
            (AgentKind::Claude, _) => None,
        };
        let (claude_model, claude_max_budget, claude_prompt_file) = match raw.claude {
            Some(c) => (
                c.model,
                c.max_budget_usd
                    .map(|d| d.to_micros())
                    .transpose()
                    .map_err(|e| invalid(format!("claude.max_budget_usd: {e}")))?,
                c.prompt_file.unwrap_or_else(|| "CLAUDE.md".into()),
            ),
            None => (None, None, "CLAUDE.md".into()),
        };
        Ok(AgentSettings {
            id: id.to_string(),
            dir,
            kind: raw.kind,
            description: raw.description.unwrap_or_default(),
            group: raw.group.unwrap_or_else(|| "default".into()),
            wallclock_seconds: raw.wallclock_seconds.unwrap_or(600).max(1),
            budget,
            command,
            claude_model,
            claude_max_budget,
            claude_prompt_file,
        })
    }

    /// The ids of every agent folder that has an `agent.toml`, sorted.
    pub fn list(settings: &Settings) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(settings.agents_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("agent.toml").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|id| valid_agent_id(id))
            .collect();
        ids.sort();
        ids
    }
}

#[cfg(test)]
mod forge_tests {
    use super::*;

    fn load(text: &str) -> Result<Settings, String> {
        let root = Path::new("/repo");
        Settings::from_toml(root, &root.join("gov.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn the_forge_section_is_read_and_its_token_is_refused() -> Result<(), String> {
        let s = load("[remote]\nname = \"origin\"\ntimeout_seconds = 7\n[remote.forge]\nkind = \"github\"\nrepo = \"acme/gov\"\n")?;
        assert_eq!(s.remote_timeout_seconds, 7);
        let f = s.forge.ok_or("no forge")?;
        assert_eq!(f.api_url, "https://api.github.com");
        assert_eq!((f.owner.as_str(), f.repo.as_str()), ("acme", "gov"));
        assert_eq!(f.token_env, "GOV_FORGE_TOKEN");
        assert_eq!(f.labels, ["gov"]);
        assert_eq!(load("")?.remote_timeout_seconds, 120);

        assert_eq!(
            load("[remote.forge]\nkind = \"github\"\nrepo = \"acme/gov\"\ntoken = \"ghp_x\"\n").err(),
            Some("`/repo/gov.toml` is not valid: forge: `token` is never read from gov.toml; put it in the environment variable named by `token_env` (default `GOV_FORGE_TOKEN`) or in a git credential helper".into())
        );
        assert_eq!(
            load("[remote.forge]\nkind = \"github\"\nrepo = \"acme\"\n").err(),
            Some(
                "`/repo/gov.toml` is not valid: forge: `repo` must be `owner/name`, not `acme`"
                    .into()
            )
        );
        assert!(load("[remote.forge]\nkind = \"gitlab\"\nrepo = \"a/b\"\n").is_err());
        Ok(())
    }
}
