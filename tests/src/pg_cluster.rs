//! A private, throw-away PostgreSQL cluster that a test can stop and start
//! again: for outage tests that must not disturb the shared test server.
//! Loopback only; `initdb` and `pg_ctl` refuse root, so as root they run as
//! the `postgres` user (the Debian packages create it).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running cluster in its own directory, removed on drop.
pub struct PgCluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

fn pg_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect(
            "PostgreSQL server binaries under /usr/lib/postgresql (make services installs them)",
        )
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join("pg_ctl").exists())
        .collect();
    dirs.sort();
    dirs.pop().expect("a PostgreSQL bin directory with pg_ctl")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a server tool as the cluster owner.
fn as_owner(program: &Path, args: &[&str]) {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    let out = cmd.args(args).output().expect("run a PostgreSQL tool");
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{}\n{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("port").port()
}

impl PgCluster {
    /// `initdb` and start a cluster on a free loopback port (a few seconds).
    pub fn start() -> PgCluster {
        let bin = pg_bin();
        let dir = std::env::temp_dir().join(format!(
            "sundial-test-pg-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("cluster directory");
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "chown the cluster directory to postgres");
        }
        let data = dir.join("data");
        let data_s = data.display().to_string();
        as_owner(
            &bin.join("initdb"),
            &[
                "-D",
                &data_s,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let cluster = PgCluster {
            bin,
            dir,
            port: free_port(),
        };
        cluster.start_again();
        cluster
    }

    /// The server's URL for `database`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Stops the server (fast shutdown: every connection is terminated).
    pub fn stop(&self) {
        let data = self.dir.join("data").display().to_string();
        as_owner(
            &self.bin.join("pg_ctl"),
            &["-D", &data, "-m", "fast", "-w", "stop"],
        );
    }

    /// Starts the stopped server again on the same port.
    pub fn start_again(&self) {
        let data = self.dir.join("data").display().to_string();
        let log = self.dir.join("log").display().to_string();
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.display()
        );
        as_owner(
            &self.bin.join("pg_ctl"),
            &["-D", &data, "-l", &log, "-o", &opts, "-w", "start"],
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.dir.join("data").display().to_string();
        let pg_ctl = self.bin.join("pg_ctl");
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&pg_ctl);
            c
        } else {
            Command::new(&pg_ctl)
        };
        let _ = cmd.args(["-D", &data, "-m", "immediate", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
