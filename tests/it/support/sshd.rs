//! A real OpenSSH server on a loopback port, for `gov sync` over `ssh://`.
//!
//! Each [`Sshd`] makes its own host key, client key and config in a
//! temporary folder and runs `/usr/sbin/sshd -D -e -f <config>` listening on
//! 127.0.0.1 only, with public-key authentication for the current user.
//! A missing `sshd` fails the test's set-up (scripts/test.sh installs
//! Debian's openssh-server); it is never a skip.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::repo::TestResult;

pub const SSHD: &str = "/usr/sbin/sshd";

pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

fn keygen(path: &Path) -> TestResult {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "gov-test", "-f"])
        .arg(path)
        .output()?;
    if !out.status.success() {
        return Err(format!("ssh-keygen: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

fn user() -> TestResult<String> {
    let out = Command::new("id").arg("-un").output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Sshd {
    /// Starts an sshd on a free loopback port.
    pub fn start() -> TestResult<Sshd> {
        if !Path::new(SSHD).is_file() {
            return Err(format!(
                "`{SSHD}` is missing: the ssh tests need Debian's openssh-server (scripts/test.sh installs it)"
            )
            .into());
        }
        let dir = tempfile::tempdir()?;
        keygen(&dir.path().join("host_key"))?;
        keygen(&dir.path().join("client_key"))?;
        std::fs::copy(
            dir.path().join("client_key.pub"),
            dir.path().join("authorized_keys"),
        )?;
        // sshd started as root checks its privilege-separation directory.
        if user()? == "root" {
            std::fs::create_dir_all("/run/sshd")?;
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPidFile {d}/sshd.pid\nLogLevel VERBOSE\n",
            d = dir.path().display()
        );
        std::fs::write(dir.path().join("sshd_config"), config)?;
        let mut sshd = Sshd {
            dir,
            port,
            child: None,
        };
        sshd.resume()?;
        Ok(sshd)
    }

    /// Starts (again) on the same port and waits until it accepts
    /// connections.
    pub fn resume(&mut self) -> TestResult {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("sshd.log"))?;
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(self.dir.path().join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    return Err(format!("sshd exited ({status}): {}", self.log()).into());
                }
            }
            if Instant::now() > until {
                return Err(format!("sshd does not listen: {}", self.log()).into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops the listener: new connections are refused until
    /// [`Sshd::resume`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// `ssh://user@127.0.0.1:port/<path>`.
    pub fn url(&self, path: &Path) -> TestResult<String> {
        Ok(format!(
            "ssh://{}@127.0.0.1:{}{}",
            user()?,
            self.port,
            path.display()
        ))
    }

    /// The `GIT_SSH_COMMAND` a client uses: the test's key, its own
    /// known-hosts file, no questions.
    pub fn ssh_command(&self) -> String {
        let d = self.dir.path().display();
        format!(
            "ssh -i {d}/client_key -o IdentitiesOnly=yes -o UserKnownHostsFile={d}/known_hosts -o StrictHostKeyChecking=no -p {}",
            self.port
        )
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}
