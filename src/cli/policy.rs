//! `gov policy check|test|eval`: validate the policy set, run its test cases,
//! ask it one question.
//!
//! Exit codes: `check` 0 valid / 2 invalid; `test` 0 all pass / 3 a case
//! failed / 2 invalid set or case file; `eval` 0 auto / 4 needs a person /
//! 5 forbidden / 2 invalid set or request.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde::Deserialize;

use super::{ExitCode, Failure};
use crate::app::policy_files::{self as policies, PolicyStoreError};
use crate::domain::policy::{parse_entity_ref, PolicySet};
use crate::domain::request::{CedarRequest, Decision, EntityData, EntityRef, Outcome};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: PolicyCommand,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Parse and validate the policy set against its schema.
    Check(CheckArgs),
    /// Run the policy test cases (`policies/tests/*.toml`).
    Test(TestArgs),
    /// Ask the policy set one question and print its decision.
    Eval(EvalArgs),
    /// What changed between two policy sets, by policy id, plus schema and
    /// static entities: `gov policy diff [FROM] TO`.
    Diff(super::policy_review::DiffArgs),
    /// Replay every recorded decision against the policy set at REV and
    /// report what would change (exit 0 none, 3 some, 2 invalid set).
    Impact(super::policy_review::ImpactArgs),
    /// Propose the working tree's changes to policies, agents and gov.toml
    /// for review: check, test, commit on `gov/policy/ID`, file a
    /// `policy_change` proposal.
    Propose(super::policy_review::ProposeArgs),
}

#[derive(Debug, clap::Args)]
pub struct DirArg {
    /// The policy folder (default: `policies/` of the governance repository).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub dir: DirArg,
}

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub dir: DirArg,
}

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub dir: DirArg,
    /// The principal, e.g. `Agent::"noop"`.
    #[arg(long, required_unless_present = "request")]
    pub principal: Option<String>,
    /// The action: `propose`, `use_tool`, `approve` or `continue`.
    #[arg(long, required_unless_present = "request")]
    pub action: Option<String>,
    /// The resource, e.g. `ActionType::"send_email"` or `Tool::"Bash"`.
    #[arg(long, required_unless_present = "request")]
    pub resource: Option<String>,
    /// The context as a JSON object (without `human_approved`).
    #[arg(long)]
    pub context: Option<String>,
    /// The principal agent's group (default: `default`).
    #[arg(long)]
    pub group: Option<String>,
    /// A whole request as JSON, from a file or `-` for stdin.
    #[arg(long, conflicts_with_all = ["principal", "action", "resource", "context", "group"])]
    pub request: Option<String>,
    /// Print the decision as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, repo: Option<PathBuf>) -> Result<ExitCode, Failure> {
    match args.command {
        PolicyCommand::Check(a) => check(&policy_dir(a.dir, repo)?),
        PolicyCommand::Test(a) => test(&policy_dir(a.dir, repo)?),
        PolicyCommand::Eval(a) => {
            let dir = policy_dir(
                DirArg {
                    dir: a.dir.dir.clone(),
                },
                repo,
            )?;
            eval(&dir, &a)
        }
        PolicyCommand::Diff(a) => super::policy_review::run_diff(a, repo),
        PolicyCommand::Impact(a) => super::policy_review::run_impact(a, repo),
        PolicyCommand::Propose(a) => super::policy_review::run_propose(a, repo),
    }
}

/// `--dir`, else `policies/` of the governance repository, else `./policies`.
fn policy_dir(arg: DirArg, repo: Option<PathBuf>) -> Result<PathBuf, Failure> {
    if let Some(dir) = arg.dir {
        return Ok(dir);
    }
    match super::repo_root(repo) {
        Ok(root) => {
            // The repository's configuration must be valid too: a command
            // that passes on a repository whose `gov.toml` is broken would
            // say the repository is fine.
            crate::config::Settings::load(&root)?;
            Ok(root.join(policies::POLICIES_DIR))
        }
        Err(e) => {
            let local = PathBuf::from(policies::POLICIES_DIR);
            if local.is_dir() {
                Ok(local)
            } else {
                Err(e)
            }
        }
    }
}

/// Loads the set from disk; an invalid set prints every problem and fails
/// with `Config`.
fn load(dir: &Path) -> Result<PolicySet, Failure> {
    match policies::load_dir(dir) {
        Ok(set) => Ok(set),
        Err(PolicyStoreError::Load(e)) => {
            let problems = e.problems();
            let n = problems.len();
            for p in problems {
                eprintln!("error: {p}");
            }
            Err(Failure::new(
                ExitCode::Config,
                format!(
                    "the policy set in `{}` is invalid ({n} problem{})",
                    dir.display(),
                    if n == 1 { "" } else { "s" }
                ),
            ))
        }
        Err(e) => Err(Failure::from_error(ExitCode::Config, &e)),
    }
}

pub(super) fn check(dir: &Path) -> Result<ExitCode, Failure> {
    let set = load(dir)?;
    let infos = set.policies();
    println!("{} policies valid (version {})", infos.len(), set.version());
    for p in infos {
        println!("  {:<6} {:<32} {}:{}", p.effect, p.id, p.file, p.line);
    }
    Ok(ExitCode::Ok)
}

/// One file of test cases.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(default)]
    case: Vec<Case>,
}

/// One test case: a question and the outcome it must get.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    principal: String,
    #[serde(default)]
    principal_attrs: Option<toml::Table>,
    action: String,
    resource: String,
    #[serde(default)]
    context: toml::Table,
    /// More entities for the request, as Cedar's JSON writes them
    /// (`{ uid = { type = "McpArguments", id = "a" }, tags = { query = "q" } }`).
    #[serde(default)]
    entities: Vec<toml::Table>,
    expect: Outcome,
    #[serde(default)]
    expect_policies: Option<Vec<String>>,
}

impl Case {
    fn request(&self) -> Result<CedarRequest, String> {
        let principal = entity_ref(&self.principal)?;
        let resource = entity_ref(&self.resource)?;
        let context = to_json_object(&self.context)?;
        let mut entities = Vec::new();
        if let Some(attrs) = &self.principal_attrs {
            entities.push(EntityData {
                uid: principal.clone(),
                attrs: to_json_object(attrs)?,
                parents: Vec::new(),
                tags: Default::default(),
            });
        }
        for e in &self.entities {
            let json = serde_json::Value::Object(to_json_object(e)?);
            entities.push(
                serde_json::from_value(json)
                    .map_err(|e| format!("invalid entity in `entities`: {e}"))?,
            );
        }
        Ok(CedarRequest {
            principal,
            action: self.action.clone(),
            resource,
            context,
            entities,
        })
    }
}

fn entity_ref(s: &str) -> Result<EntityRef, String> {
    parse_entity_ref(s)
        .ok_or_else(|| format!("`{s}` is not an entity (write it as `Type::\"id\"`)"))
}

fn to_json_object(t: &toml::Table) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match serde_json::to_value(t) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err("a table was expected".to_string()),
        Err(e) => Err(format!("cannot convert the table: {e}")),
    }
}

/// A case, its request and the file it came from.
struct Loaded {
    file: String,
    case: Case,
    request: CedarRequest,
}

fn load_cases(dir: &Path) -> Result<Vec<Loaded>, Failure> {
    let tests = dir.join("tests");
    let config = |msg: String| Failure::new(ExitCode::Config, msg);
    let entries = std::fs::read_dir(&tests).map_err(|e| {
        config(format!(
            "cannot read the test cases in `{}`: {e}",
            tests.display()
        ))
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| config(format!("cannot read `{shown}`: {e}")))?;
        let parsed: CaseFile = toml::from_str(&text).map_err(|e| {
            config(format!(
                "`{shown}`: invalid test cases: {}",
                e.to_string().trim()
            ))
        })?;
        for case in parsed.case {
            let request = case
                .request()
                .map_err(|e| config(format!("`{shown}`: case `{}`: {e}", case.name)))?;
            out.push(Loaded {
                file: shown.clone(),
                case,
                request,
            });
        }
    }
    if out.is_empty() {
        return Err(config(format!(
            "no test cases in `{}/*.toml`",
            tests.display()
        )));
    }
    Ok(out)
}

fn cited_ids(d: &Decision) -> Vec<String> {
    d.policies.iter().map(|p| p.id.clone()).collect()
}

pub(super) fn test(dir: &Path) -> Result<ExitCode, Failure> {
    let set = load(dir)?;
    let cases = load_cases(dir)?;
    let mut exercised: BTreeSet<String> = BTreeSet::new();
    let mut failed = Vec::new();
    let width = cases
        .iter()
        .map(|c| c.case.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:<4}  {:<width$}  {:<12}  {:<12}  policies",
        "", "case", "expected", "got"
    );
    for loaded in &cases {
        let case = &loaded.case;
        let decision = set.decide(&loaded.request);
        let ids = cited_ids(&decision);
        exercised.extend(ids.iter().cloned());
        let policies_ok = match &case.expect_policies {
            None => true,
            Some(want) => {
                let want: BTreeSet<&String> = want.iter().collect();
                let got: BTreeSet<&String> = ids.iter().collect();
                want == got
            }
        };
        let pass = decision.outcome == case.expect && policies_ok;
        let mut cited = if ids.is_empty() {
            "(none: default deny)".to_string()
        } else {
            ids.join(", ")
        };
        if !decision.errors.is_empty() {
            cited.push_str(&format!(" errors: {}", decision.errors.join("; ")));
        }
        println!(
            "{:<4}  {:<width$}  {:<12}  {:<12}  {}",
            if pass { "ok" } else { "FAIL" },
            case.name,
            case.expect.as_str(),
            decision.outcome.as_str(),
            cited
        );
        if !pass {
            let mut why = format!(
                "`{}` ({}): expected {}, got {}",
                case.name, loaded.file, case.expect, decision.outcome
            );
            if let (false, Some(want)) = (policies_ok, &case.expect_policies) {
                why.push_str(&format!(
                    "; expected policies [{}], got [{}]",
                    want.join(", "),
                    ids.join(", ")
                ));
            }
            failed.push(why);
        }
    }
    let unexercised: Vec<String> = set
        .policies()
        .into_iter()
        .map(|p| p.id)
        .filter(|id| !exercised.contains(id))
        .collect();
    println!();
    if unexercised.is_empty() {
        println!("every policy is exercised by a case");
    } else {
        println!("not exercised by any case: {}", unexercised.join(", "));
    }
    println!(
        "{} passed, {} failed",
        cases.len() - failed.len(),
        failed.len()
    );
    if failed.is_empty() {
        Ok(ExitCode::Ok)
    } else {
        for f in &failed {
            eprintln!("failed: {f}");
        }
        Ok(ExitCode::CheckFailed)
    }
}

fn eval_request(args: &EvalArgs) -> Result<CedarRequest, Failure> {
    let config = |msg: String| Failure::new(ExitCode::Config, msg);
    if let Some(src) = &args.request {
        let text = if src == "-" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| config(format!("cannot read the request from stdin: {e}")))?;
            s
        } else {
            std::fs::read_to_string(src).map_err(|e| config(format!("cannot read `{src}`: {e}")))?
        };
        return serde_json::from_str(&text).map_err(|e| config(format!("invalid request: {e}")));
    }
    let missing = |flag: &str| config(format!("missing --{flag}"));
    let principal = entity_ref(
        args.principal
            .as_deref()
            .ok_or_else(|| missing("principal"))?,
    )
    .map_err(config)?;
    let resource = entity_ref(
        args.resource
            .as_deref()
            .ok_or_else(|| missing("resource"))?,
    )
    .map_err(config)?;
    let action = args.action.clone().ok_or_else(|| missing("action"))?;
    let context = match &args.context {
        None => serde_json::Map::new(),
        Some(text) => match serde_json::from_str(text) {
            Ok(serde_json::Value::Object(m)) => m,
            Ok(_) => return Err(config("--context must be a JSON object".to_string())),
            Err(e) => return Err(config(format!("invalid --context: {e}"))),
        },
    };
    let mut entities = Vec::new();
    if let Some(group) = &args.group {
        let mut attrs = serde_json::Map::new();
        attrs.insert("group".into(), group.clone().into());
        entities.push(EntityData {
            uid: principal.clone(),
            attrs,
            parents: Vec::new(),
            tags: Default::default(),
        });
    }
    Ok(CedarRequest {
        principal,
        action,
        resource,
        context,
        entities,
    })
}

fn eval(dir: &Path, args: &EvalArgs) -> Result<ExitCode, Failure> {
    let set = load(dir)?;
    let request = eval_request(args)?;
    let decision = set
        .try_decide(&request)
        .map_err(|e| Failure::new(ExitCode::Config, e))?;
    if args.json {
        let text = serde_json::to_string_pretty(&decision).map_err(|e| {
            Failure::new(ExitCode::Failure, format!("cannot print the decision: {e}"))
        })?;
        println!("{text}");
    } else {
        println!("{}", decision.outcome);
        if decision.policies.is_empty() && decision.errors.is_empty() {
            println!("  no policy matched (default deny)");
        }
        for p in &decision.policies {
            let effect = set.policy(&p.id).map(|i| i.effect.as_str()).unwrap_or("");
            println!("  {effect} {}: {}", p.id, p.reason);
        }
        for e in &decision.errors {
            println!("  error: {e}");
        }
        if decision.self_approve_blocked {
            println!("  reserved for a person: an agent may not skip the approval");
        }
        println!("policy version: {}", decision.policy_version);
    }
    Ok(match decision.outcome {
        Outcome::Auto => ExitCode::Ok,
        Outcome::NeedsPerson => ExitCode::NeedsPerson,
        Outcome::Forbidden => ExitCode::Forbidden,
    })
}
