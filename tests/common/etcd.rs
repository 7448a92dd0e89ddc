//! etcd as an operator runs it, for the end-to-end tests (and the test
//! certificates the TLS tests share): Debian's `etcd`
//! with its default limits (never raised here), on a port the test
//! chooses, optionally with TLS and client-certificate authentication on
//! certificates the test generates (openssl CLI: a CA, a server
//! certificate for IP 127.0.0.1, client certificates; in a temporary
//! directory, never checked in).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Certificates made for one test.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out =
        Command::new("openssl").args(args).current_dir(dir).output().expect("the openssl command (Debian: openssl)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Pki {
    /// A CA `ca`, the server certificate `server` (IP SAN 127.0.0.1) and a
    /// client certificate `client`, all signed by the CA; and `other-ca`
    /// with a client certificate `stranger` signed by it.
    pub fn new() -> Pki {
        let pki = Pki { dir: tempfile::tempdir().unwrap() };
        let p = pki.dir.path();
        std::fs::write(
            p.join("ca.cnf"),
            "[req]\ndistinguished_name=dn\nx509_extensions=v3_ca\n[dn]\n[v3_ca]\n\
             basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
        )
        .unwrap();
        std::fs::write(p.join("server.ext"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
            .unwrap();
        std::fs::write(p.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for ca in ["ca", "other-ca"] {
            let (key, crt) = (format!("{ca}.key"), format!("{ca}.crt"));
            openssl(
                p,
                &[
                    "req",
                    "-x509",
                    "-config",
                    "ca.cnf",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-keyout",
                    &key,
                    "-out",
                    &crt,
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=leviathan test {ca}"),
                ],
            );
        }
        pki.leaf("server", "ca", "server.ext");
        pki.leaf("client", "ca", "client.ext");
        pki.leaf("stranger", "other-ca", "client.ext");
        pki
    }

    /// `NAME.crt` and `NAME.key` signed by `CA` with the extensions of the
    /// file `ext` (`server.ext`: IP 127.0.0.1; `client.ext`).
    pub fn leaf(&self, name: &str, ca: &str, ext: &str) {
        let p = self.dir.path();
        let (key, csr, crt) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"));
        openssl(
            p,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={name}"),
                "-config",
                "ca.cnf",
            ],
        );
        openssl(
            p,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &format!("{ca}.crt"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                ext,
            ],
        );
    }

    /// The path of `name` (`ca.crt`, `client.key`, ...).
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }
}

/// One etcd member with stock limits; killed and its data removed when
/// dropped.
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub port: u16,
    peer_port: u16,
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
}

impl Etcd {
    /// A member on `port` (plain HTTP), not started yet.
    pub fn plain(port: u16) -> Etcd {
        Etcd { child: None, dir: tempfile::tempdir().unwrap(), port, peer_port: super::free_port(), tls: None }
    }

    /// A member on `port` serving TLS with the server certificate of
    /// `pki` and requiring client certificates signed by its CA.
    pub fn mutual_tls(port: u16, pki: &Pki) -> Etcd {
        let p = |n: &str| PathBuf::from(pki.path(n));
        let mut e = Etcd::plain(port);
        e.tls = Some((p("ca.crt"), p("server.crt"), p("server.key")));
        e
    }

    /// The client URL.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Starts the member (no raised limits: etcd's defaults).
    pub fn start(&mut self) {
        let bin = leviathan::store::testing::etcd_binary().expect("etcd on PATH");
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new(bin);
        cmd.args(["--name", "m0", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("m0={peer}"), "--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-level", "error"]);
        if let Some((ca, cert, key)) = &self.tls {
            cmd.arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(ca)
                .arg("--cert-file")
                .arg(cert)
                .arg("--key-file")
                .arg(key);
        }
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start etcd");
        self.child = Some(child);
    }

    /// Waits (bounded) until the member answers on its client port.
    pub fn wait_listening(&mut self) {
        let deadline = Instant::now() + super::WAIT;
        // Listening by this member: a port picked free may have been taken
        // by another test's etcd meanwhile (then this one exits).
        let ours =
            |c: &Option<Child>| c.as_ref().is_some_and(|c| leviathan::store::testing::listens_on(c.id(), self.port));
        while !ours(&self.child) || std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(Child::try_wait) {
                panic!("etcd on port {} exited: {st}", self.port);
            }
            assert!(Instant::now() < deadline, "etcd on port {} not listening within {:?}", self.port, super::WAIT);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `leviathan serve --no-realize --etcd ENDPOINTS --host-id HOST
/// --etcd-timeout 2 EXTRA…` on a free loopback port, its log discarded.
pub fn etcd_server(endpoints: &str, host: &str, extra: &[&str]) -> super::Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_leviathan"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--no-realize", "--etcd", endpoints, "--host-id", host])
        .args(["--etcd-timeout", "2"])
        .args(extra);
    super::Server::spawn(cmd, None, Duration::from_secs(120))
}
