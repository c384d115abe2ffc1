//! A Bash command line taken apart by structure, so that policies judge each
//! program it runs instead of the whole string.
//!
//! The parsing is `brush-parser` (the parser of the brush shell, written to
//! follow bash's grammar; pure Rust, maintained, with a typed syntax tree and
//! a word parser that tells quoting from expansion). This module walks its
//! tree and returns a [`ShellLine`]: every simple command (program and
//! arguments as the shell would pass them, once quotes are removed), what
//! joins them, the files their redirections name, and a flag for each
//! construct whose effect cannot be known without running it. A line with
//! such a construct is not *reducible*: gov never allows it without a
//! person, whatever the policies say.
//!
//! Pure: no file system here. Resolving programs on `PATH` and making
//! redirection targets canonical is the caller's job.

use std::collections::BTreeSet;

use brush_parser::ast;
use brush_parser::word::{self, WordPiece};

/// What joins the simple commands of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Joiner {
    /// `a | b`
    Pipe,
    /// `a; b` or a newline
    Sequence,
    /// `a && b`
    And,
    /// `a || b`
    Or,
    /// `a &`
    Background,
    /// `( a )`
    Subshell,
    /// `{ a; }`
    Group,
    /// `! a`
    Negation,
}

impl Joiner {
    /// The name policies see in `context.line.joiners`.
    pub fn as_str(self) -> &'static str {
        match self {
            Joiner::Pipe => "pipe",
            Joiner::Sequence => "sequence",
            Joiner::And => "and",
            Joiner::Or => "or",
            Joiner::Background => "background",
            Joiner::Subshell => "subshell",
            Joiner::Group => "group",
            Joiner::Negation => "negation",
        }
    }
}

/// A construct whose effect cannot be judged from the text alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dynamic {
    /// The line does not parse (or uses syntax this module does not read).
    ParseError,
    /// `$(…)` or backticks.
    CommandSubstitution,
    /// `<(…)` or `>(…)`.
    ProcessSubstitution,
    /// `$VAR`, `${…}`, `$((…))`, `~user`, `$'…'`, brace expansion `{a,b}`.
    Expansion,
    /// `eval`, `source`, `.`, or a shell given code (`bash -c`, `sh -c`, a
    /// shell reading its program from a pipe or a here-doc).
    NestedShell,
    /// A here-doc whose body the shell expands (`<<EOF` with `$` or a
    /// backtick in it).
    HeredocExpansion,
    /// An assignment to a variable that changes what runs (`PATH=…`,
    /// `LD_PRELOAD=…`, `BASH_ENV=…`, …), before a command or on its own.
    SensitiveAssignment,
    /// `if`, `for`, `while`, `until`, `case`, `[[ … ]]`, `(( … ))`, a
    /// function definition, a coprocess.
    ControlFlow,
}

impl Dynamic {
    pub fn as_str(self) -> &'static str {
        match self {
            Dynamic::ParseError => "parse_error",
            Dynamic::CommandSubstitution => "command_substitution",
            Dynamic::ProcessSubstitution => "process_substitution",
            Dynamic::Expansion => "expansion",
            Dynamic::NestedShell => "nested_shell",
            Dynamic::HeredocExpansion => "heredoc_expansion",
            Dynamic::SensitiveAssignment => "sensitive_assignment",
            Dynamic::ControlFlow => "control_flow",
        }
    }

    pub const ALL: [Dynamic; 8] = [
        Dynamic::ParseError,
        Dynamic::CommandSubstitution,
        Dynamic::ProcessSubstitution,
        Dynamic::Expansion,
        Dynamic::NestedShell,
        Dynamic::HeredocExpansion,
        Dynamic::SensitiveAssignment,
        Dynamic::ControlFlow,
    ];
}

/// A file a redirection names, as written (`> out.txt`, `2>> /tmp/log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub target: String,
    /// Written to (`>`, `>>`, `<>`, `>|`, `&>`), not only read (`<`).
    pub writes: bool,
}

/// One program the line runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SimpleCommand {
    /// The program as written (`git`, `/usr/bin/git`, `./git`).
    pub program: String,
    /// Its arguments, quotes removed.
    pub args: Vec<String>,
    /// The names of variables assigned for this command only (`X=1 cmd`).
    pub assignments: Vec<String>,
    pub redirects: Vec<Redirect>,
}

impl SimpleCommand {
    /// Program and arguments joined by one space: `git status --short`.
    pub fn words(&self) -> String {
        let mut all = vec![self.program.as_str()];
        all.extend(self.args.iter().map(String::as_str));
        all.join(" ")
    }

    /// Whether the program runs another program named in its arguments
    /// (`env`, `xargs`, `sudo`, `nohup`, `timeout`, …): a rule that permits
    /// it permits whatever it is told to run.
    pub fn is_wrapper(&self) -> bool {
        WRAPPERS.contains(&basename(&self.program))
    }
}

/// Programs that run a program named in their arguments.
const WRAPPERS: &[&str] = &[
    "env", "xargs", "sudo", "doas", "su", "nohup", "nice", "ionice", "timeout", "time", "exec",
    "command", "builtin", "stdbuf", "setsid", "chroot", "unshare", "nsenter", "flock", "watch",
    "strace", "ltrace", "busybox", "chrt", "taskset", "script", "runuser", "firejail", "find",
    "parallel", "npx", "uvx",
];

/// Shells: given code with `-c`, or reading their program from stdin.
const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "fish", "csh", "tcsh", "ash", "busybox",
];

/// Variables whose value changes which program runs or what it loads.
const SENSITIVE_VARIABLES: &[&str] = &[
    "PATH",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "LD_AUDIT",
    "BASH_ENV",
    "ENV",
    "IFS",
    "CDPATH",
    "PS4",
    "PROMPT_COMMAND",
    "SHELLOPTS",
    "BASHOPTS",
    "GLOBIGNORE",
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "NODE_OPTIONS",
    "PERL5OPT",
    "RUBYOPT",
    "GIT_EXEC_PATH",
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_PAGER",
    "GIT_EDITOR",
    "GIT_CONFIG_GLOBAL",
    "PAGER",
    "EDITOR",
    "VISUAL",
    "HOME",
];

fn sensitive_variable(name: &str) -> bool {
    SENSITIVE_VARIABLES.contains(&name)
        || name.starts_with("DYLD_")
        || name.starts_with("LD_")
        || name.starts_with("BASH_FUNC_")
        || name.starts_with("GIT_CONFIG")
}

/// A command line taken apart.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShellLine {
    pub commands: Vec<SimpleCommand>,
    pub joiners: BTreeSet<Joiner>,
    pub dynamic: BTreeSet<Dynamic>,
    /// Variables assigned on their own (`X=1; cmd`).
    pub assignments: Vec<String>,
}

impl ShellLine {
    /// Whether every program the line runs is known from its text: no
    /// construct in [`Dynamic`]. Only a reducible line may be allowed
    /// without a person.
    pub fn reducible(&self) -> bool {
        self.dynamic.is_empty()
    }

    /// Every redirection of every command.
    pub fn redirects(&self) -> impl Iterator<Item = &Redirect> {
        self.commands.iter().flat_map(|c| c.redirects.iter())
    }
}

/// The last `/`-separated part of a program path.
pub fn basename(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}

/// Takes a command line apart. Never fails: what cannot be read is a
/// [`Dynamic`] flag.
pub fn parse(line: &str) -> ShellLine {
    let mut out = ShellLine::default();
    let options = brush_parser::ParserOptions::default();
    let mut parser = brush_parser::Parser::new(std::io::Cursor::new(line.as_bytes()), &options);
    match parser.parse_program() {
        Ok(program) => {
            let mut walker = Walker {
                out: &mut out,
                options: &options,
            };
            if program.complete_commands.len() > 1 {
                walker.out.joiners.insert(Joiner::Sequence);
            }
            for list in &program.complete_commands {
                walker.compound_list(list);
            }
        }
        Err(_) => {
            out.dynamic.insert(Dynamic::ParseError);
        }
    }
    out
}

struct Walker<'a> {
    out: &'a mut ShellLine,
    options: &'a brush_parser::ParserOptions,
}

impl Walker<'_> {
    fn flag(&mut self, d: Dynamic) {
        self.out.dynamic.insert(d);
    }

    fn compound_list(&mut self, list: &ast::CompoundList) {
        if list.0.len() > 1 {
            self.out.joiners.insert(Joiner::Sequence);
        }
        for ast::CompoundListItem(and_or, sep) in &list.0 {
            if matches!(sep, ast::SeparatorOperator::Async) {
                self.out.joiners.insert(Joiner::Background);
            }
            self.pipeline(&and_or.first);
            for next in &and_or.additional {
                match next {
                    ast::AndOr::And(p) => {
                        self.out.joiners.insert(Joiner::And);
                        self.pipeline(p);
                    }
                    ast::AndOr::Or(p) => {
                        self.out.joiners.insert(Joiner::Or);
                        self.pipeline(p);
                    }
                }
            }
        }
    }

    fn pipeline(&mut self, p: &ast::Pipeline) {
        if p.seq.len() > 1 {
            self.out.joiners.insert(Joiner::Pipe);
        }
        if p.bang {
            self.out.joiners.insert(Joiner::Negation);
        }
        let piped = p.seq.len() > 1;
        for (i, cmd) in p.seq.iter().enumerate() {
            self.command(cmd, piped && i > 0);
        }
    }

    fn command(&mut self, cmd: &ast::Command, reads_pipe: bool) {
        match cmd {
            ast::Command::Simple(simple) => self.simple(simple, reads_pipe),
            ast::Command::Compound(compound, redirects) => {
                let before = self.out.commands.len();
                match compound {
                    ast::CompoundCommand::BraceGroup(g) => {
                        self.out.joiners.insert(Joiner::Group);
                        self.compound_list(&g.list);
                    }
                    ast::CompoundCommand::Subshell(s) => {
                        self.out.joiners.insert(Joiner::Subshell);
                        self.compound_list(&s.list);
                    }
                    _ => self.flag(Dynamic::ControlFlow),
                }
                // Redirections of a group apply to every command in it.
                if let Some(list) = redirects {
                    let mut found = Vec::new();
                    for r in &list.0 {
                        if let Some(r) = self.redirect(r) {
                            found.push(r);
                        }
                    }
                    if found.is_empty() {
                        return;
                    }
                    if self.out.commands.len() == before {
                        self.out.commands.push(SimpleCommand {
                            redirects: found,
                            ..SimpleCommand::default()
                        });
                    } else {
                        for c in &mut self.out.commands[before..] {
                            c.redirects.extend(found.iter().cloned());
                        }
                    }
                }
            }
            ast::Command::Function(_) | ast::Command::ExtendedTest(..) => {
                self.flag(Dynamic::ControlFlow)
            }
        }
    }

    fn simple(&mut self, simple: &ast::SimpleCommand, reads_pipe: bool) {
        let mut cmd = SimpleCommand::default();
        let mut words: Vec<String> = Vec::new();
        let mut assignments: Vec<String> = Vec::new();
        let items = simple
            .prefix
            .iter()
            .flat_map(|p| p.0.iter())
            .chain(simple.suffix.iter().flat_map(|s| s.0.iter()));
        if let Some(w) = &simple.word_or_name {
            // A word whose value is only known at run time (flagged) is kept
            // as written, so that it never shifts another word into its place.
            let text = self.word(w).unwrap_or_else(|| w.value.clone());
            words.push(text);
        }
        let mut args_after: Vec<String> = Vec::new();
        let mut stdin_doc = false;
        for item in items {
            match item {
                ast::CommandPrefixOrSuffixItem::IoRedirect(r) => {
                    stdin_doc |= matches!(
                        r,
                        ast::IoRedirect::HereDocument(..) | ast::IoRedirect::HereString(..)
                    );
                    if let Some(r) = self.redirect(r) {
                        cmd.redirects.push(r);
                    }
                }
                ast::CommandPrefixOrSuffixItem::Word(w) => {
                    args_after.push(self.word(w).unwrap_or_else(|| w.value.clone()));
                }
                ast::CommandPrefixOrSuffixItem::AssignmentWord(a, _) => {
                    let name = match &a.name {
                        ast::AssignmentName::VariableName(n) => n.clone(),
                        ast::AssignmentName::ArrayElementName(n, _) => n.clone(),
                    };
                    if sensitive_variable(&name) {
                        self.flag(Dynamic::SensitiveAssignment);
                    }
                    match &a.value {
                        ast::AssignmentValue::Scalar(w) => {
                            self.word(w);
                        }
                        ast::AssignmentValue::Array(items) => {
                            for (k, v) in items {
                                if let Some(k) = k {
                                    self.word(k);
                                }
                                self.word(v);
                            }
                        }
                    }
                    assignments.push(name);
                }
                ast::CommandPrefixOrSuffixItem::ProcessSubstitution(..) => {
                    self.flag(Dynamic::ProcessSubstitution)
                }
            }
        }
        words.extend(args_after);
        let mut words = words.into_iter();
        match words.next() {
            Some(program) => {
                cmd.program = program;
                cmd.args = words.collect();
                cmd.assignments = assignments;
                self.judge_program(&cmd, reads_pipe, stdin_doc);
                self.out.commands.push(cmd);
            }
            None => {
                // Assignments (and redirections) with no program: they set
                // shell variables or create files.
                self.out.assignments.extend(assignments);
                if !cmd.redirects.is_empty() {
                    self.out.commands.push(cmd);
                }
            }
        }
    }

    /// Flags a program that runs code gov cannot see.
    fn judge_program(&mut self, cmd: &SimpleCommand, reads_pipe: bool, stdin_doc: bool) {
        let name = basename(&cmd.program);
        if matches!(name, "eval" | "source" | ".") {
            self.flag(Dynamic::NestedShell);
        }
        if SHELLS.contains(&name) {
            let gives_code = cmd
                .args
                .iter()
                .any(|a| a.starts_with('-') && !a.starts_with("--") && a.contains('c'));
            let reads_stdin = cmd.args.iter().all(|a| a.starts_with('-'));
            if gives_code || (reads_stdin && (reads_pipe || stdin_doc)) || cmd.args.is_empty() {
                self.flag(Dynamic::NestedShell);
            }
        }
    }

    /// A redirection: a file it names, or `None` for descriptor copies and
    /// here-docs (whose body is checked here).
    fn redirect(&mut self, r: &ast::IoRedirect) -> Option<Redirect> {
        use ast::IoFileRedirectKind as K;
        match r {
            ast::IoRedirect::File(_, kind, target) => match target {
                ast::IoFileRedirectTarget::Filename(w) => {
                    let target = self.word(w)?;
                    let writes = matches!(
                        kind,
                        K::Write | K::Append | K::ReadAndWrite | K::Clobber | K::DuplicateOutput
                    );
                    Some(Redirect { target, writes })
                }
                ast::IoFileRedirectTarget::Fd(_) => None,
                ast::IoFileRedirectTarget::Duplicate(w) => {
                    let text = self.word(w)?;
                    // `2>&1`, `>&-`: descriptors; anything else is a file.
                    if text == "-" || text.chars().all(|c| c.is_ascii_digit()) {
                        None
                    } else {
                        Some(Redirect {
                            target: text,
                            writes: matches!(kind, K::DuplicateOutput),
                        })
                    }
                }
                ast::IoFileRedirectTarget::ProcessSubstitution(..) => {
                    self.flag(Dynamic::ProcessSubstitution);
                    None
                }
            },
            ast::IoRedirect::HereDocument(_, doc) => {
                let body = &doc.doc.value;
                if doc.requires_expansion && body.contains(['$', '`']) {
                    self.flag(Dynamic::HeredocExpansion);
                }
                None
            }
            ast::IoRedirect::HereString(_, w) => {
                self.word(w);
                None
            }
            ast::IoRedirect::OutputAndError(w, _) => {
                let target = self.word(w)?;
                Some(Redirect {
                    target,
                    writes: true,
                })
            }
        }
    }

    /// A word as the shell passes it, quotes removed; `None` (and a flag)
    /// when its value is only known at run time.
    fn word(&mut self, w: &ast::Word) -> Option<String> {
        let Ok(pieces) = word::parse(&w.value, self.options) else {
            self.flag(Dynamic::ParseError);
            return None;
        };
        let mut text = String::new();
        let mut known = true;
        for p in &pieces {
            known &= self.piece(&p.piece, &mut text, false);
        }
        known.then_some(text)
    }

    fn piece(&mut self, piece: &WordPiece, text: &mut String, quoted: bool) -> bool {
        match piece {
            WordPiece::Text(t) => {
                if !quoted && brace_expansion(t) {
                    self.flag(Dynamic::Expansion);
                    return false;
                }
                text.push_str(t);
                true
            }
            WordPiece::SingleQuotedText(t) => {
                text.push_str(t);
                true
            }
            WordPiece::EscapeSequence(e) => {
                text.push_str(e.strip_prefix('\\').unwrap_or(e));
                true
            }
            WordPiece::DoubleQuotedSequence(inner)
            | WordPiece::GettextDoubleQuotedSequence(inner) => {
                let mut known = true;
                for p in inner {
                    known &= self.piece(&p.piece, text, true);
                }
                known
            }
            WordPiece::TildeExpansion(word::TildeExpr::Home) => {
                text.push('~');
                true
            }
            WordPiece::CommandSubstitution(_) | WordPiece::BackquotedCommandSubstitution(_) => {
                self.flag(Dynamic::CommandSubstitution);
                false
            }
            WordPiece::AnsiCQuotedText(_)
            | WordPiece::TildeExpansion(_)
            | WordPiece::ParameterExpansion(_)
            | WordPiece::ArithmeticExpression(_) => {
                self.flag(Dynamic::Expansion);
                false
            }
        }
    }
}

/// Whether unquoted text has a brace expansion (`{a,b}`, `{1..3}`).
fn brace_expansion(t: &str) -> bool {
    let Some(open) = t.find('{') else {
        return false;
    };
    let rest = &t[open..];
    match rest.find('}') {
        Some(close) => {
            let inner = &rest[1..close];
            inner.contains(',') || inner.contains("..")
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        parse(line)
            .commands
            .iter()
            .map(SimpleCommand::words)
            .collect()
    }

    fn flags(line: &str) -> Vec<&'static str> {
        parse(line).dynamic.iter().map(|d| d.as_str()).collect()
    }

    #[test]
    fn a_plain_command_is_one_reducible_command() {
        let l = parse("git status --short");
        assert!(l.reducible());
        assert_eq!(words("git status --short"), ["git status --short"]);
        assert!(l.joiners.is_empty());
        assert_eq!(l.commands[0].program, "git");
        assert_eq!(l.commands[0].args, ["status", "--short"]);
    }

    #[test]
    fn quotes_are_removed_as_the_shell_does() {
        assert_eq!(words(r#"git "st"'atus' a\ b"#), ["git status a b"]);
        assert_eq!(words("ls ~/x"), ["ls ~/x"]);
    }

    #[test]
    fn joiners_split_the_line_into_commands() {
        for (line, want, joiner) in [
            ("git status; curl x", 2, Joiner::Sequence),
            ("git status\ncurl x", 2, Joiner::Sequence),
            ("git status && rm -rf ~", 2, Joiner::And),
            ("git status || rm x", 2, Joiner::Or),
            ("git status | sh", 2, Joiner::Pipe),
            ("git status & rm x", 2, Joiner::Background),
            ("(git status; rm x)", 2, Joiner::Subshell),
            ("{ git status; rm x; }", 2, Joiner::Group),
        ] {
            let l = parse(line);
            assert_eq!(l.commands.len(), want, "{line}");
            assert!(l.joiners.contains(&joiner), "{line}: {:?}", l.joiners);
            assert_eq!(l.commands[0].words(), "git status", "{line}");
        }
    }

    #[test]
    fn what_cannot_be_judged_statically_is_flagged() {
        for (line, flag) in [
            ("git status $(curl x)", "command_substitution"),
            ("git status `curl x`", "command_substitution"),
            ("diff <(cat /etc/passwd) x", "process_substitution"),
            ("eval 'rm -rf ~'", "nested_shell"),
            ("source ./x.sh", "nested_shell"),
            (". ./x.sh", "nested_shell"),
            ("bash -c 'git status; rm x'", "nested_shell"),
            ("sh -c 'rm x'", "nested_shell"),
            ("curl x | sh", "nested_shell"),
            ("PATH=. git status", "sensitive_assignment"),
            ("LD_PRELOAD=/x.so ls", "sensitive_assignment"),
            ("PATH=/tmp; git status", "sensitive_assignment"),
            ("ls $HOME", "expansion"),
            ("ls ${X}", "expansion"),
            ("ls {/etc,.}", "expansion"),
            ("for f in *; do rm $f; done", "control_flow"),
            ("if true; then rm x; fi", "control_flow"),
            ("f() { rm x; }; f", "control_flow"),
            ("cat <<EOF\n$(rm x)\nEOF\n", "heredoc_expansion"),
            ("git status 'unterminated", "parse_error"),
        ] {
            let l = parse(line);
            assert!(!l.reducible(), "{line}");
            assert!(flags(line).contains(&flag), "{line}: {:?}", flags(line));
        }
        // A word known only at run time stays as written, in its place.
        assert_eq!(words("$x -rf ~"), ["$x -rf ~"]);
        assert_eq!(words("git status $(curl x)"), ["git status $(curl x)"]);
        // A quoted here-doc is not expanded.
        assert!(parse("cat <<'EOF'\n$(rm x)\nEOF\n").reducible());
        // `bash script.sh` runs a file, which is an ordinary argument.
        assert!(parse("bash smoke.sh").reducible());
    }

    #[test]
    fn redirections_name_their_files() {
        let l = parse("git status > /tmp/out 2>&1 < in.txt");
        assert_eq!(l.commands.len(), 1);
        assert_eq!(
            l.commands[0].redirects,
            vec![
                Redirect {
                    target: "/tmp/out".into(),
                    writes: true
                },
                Redirect {
                    target: "in.txt".into(),
                    writes: false
                }
            ]
        );
        let g = parse("{ ls; git status; } > ../out");
        assert!(g
            .commands
            .iter()
            .all(|c| c.redirects.iter().any(|r| r.target == "../out")));
        let bare = parse("> /etc/motd");
        assert_eq!(bare.commands.len(), 1);
        assert_eq!(bare.commands[0].program, "");
    }

    #[test]
    fn wrappers_are_recognised() {
        let l = parse("env X=1 git status");
        assert_eq!(l.commands[0].program, "env");
        assert!(l.commands[0].is_wrapper());
        assert!(!parse("git status").commands[0].is_wrapper());
        assert_eq!(basename("/usr/bin/git"), "git");
    }
}
