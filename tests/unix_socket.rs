//! The local socket (`serve --unix-socket`): the same routes without the
//! token, the peer authenticated by the kernel (root, or a member of the
//! socket file's group; anyone else 403 FORBIDDEN); created 0660, removed
//! at exit, a stale one replaced; the CLI reaches it with `--server
//! unix:PATH`.

mod common;

use common::Server;
use serde_json::{json, Value};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

const TOKEN: &str = "unix-socket-test-token-0123";

/// `curl` over the socket, as `uid:gid` when given (with `setpriv`).
fn curl(sock: &Path, body: &str, as_user: Option<&str>) -> (u16, Value) {
    let mut cmd = match as_user {
        Some(ug) => {
            let (u, g) = ug.split_once(':').unwrap();
            let mut c = Command::new("setpriv");
            c.args(["--reuid", u, "--regid", g, "--clear-groups", "curl"]);
            c
        }
        None => Command::new("curl"),
    };
    let out = cmd
        .args(["-s", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(sock)
        .args(["http://localhost/graphql", "-H", "content-type: application/json", "-d", body])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.parse().unwrap_or(0), serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_socket_serves_without_the_token_to_root_and_its_group_only() {
    if !common::kernel::can_run("the_socket_serves_without_the_token") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("run/leviathan.sock");
    let s = Server::start(&dir.path().join("s.db"), &["--token", TOKEN, "--unix-socket", sock.to_str().unwrap()]);
    let meta = std::fs::metadata(&sock).expect("the socket exists once the server listens");
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.uid(), 0);
    // Over TCP the token is needed; over the socket it is not.
    let (status, _) = s.post(&json!({"query": "{ revision }"})).await;
    assert_eq!(status, 200);
    let mut anonymous = reqwest::Client::new().post(s.url("/graphql")).json(&json!({"query": "{ revision }"}));
    anonymous = anonymous.header("content-type", "application/json");
    assert_eq!(anonymous.send().await.unwrap().status().as_u16(), 401);
    let (code, body) = curl(&sock, r#"{"query":"mutation { cenCreate(input: {id: \"local\"}) { revision } }"}"#, None);
    assert_eq!((code, &body["data"]["cenCreate"]["revision"]), (200, &json!(1)), "{body}");
    // A stranger who can open the socket (mode widened by hand) is still
    // refused by its credentials, and changes nothing.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, body) =
        curl(&sock, r#"{"query":"mutation { cenCreate(input: {id: \"x\"}) { revision } }"}"#, Some("65534:65534"));
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN", "{body}");
    // A member of the socket's group is let in.
    std::os::unix::fs::chown(&sock, None, Some(65534)).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o660)).unwrap();
    let (code, body) = curl(&sock, r#"{"query":"{ cens { id } }"}"#, Some("65534:65534"));
    assert_eq!((code, &body["data"]["cens"]), (200, &json!([{"id": "local"}])), "{body}");
    // The CLI, with no token, over the socket.
    let out = Command::new(env!("CARGO_BIN_EXE_leviathan"))
        .args(["get", "cens", "--server", &format!("unix:{}", sock.display())])
        .env_remove("LEVIATHAN_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("local"));
    // Removed at exit.
    s.stop();
    assert!(!sock.exists(), "the socket file is removed at exit");
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("l.sock");
    let state = dir.path().join("s.db");
    let s = Server::start(&state, &["--unix-socket", sock.to_str().unwrap()]);
    // A second server on the same socket is refused, saying why.
    let out = Command::new(env!("CARGO_BIN_EXE_leviathan"))
        .args(["serve", "--no-realize", "--listen", "127.0.0.1:0", "--state"])
        .arg(dir.path().join("other.db"))
        .arg("--unix-socket")
        .arg(&sock)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another server answers on it"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Killed: the file stays behind, and the next start replaces it.
    s.kill9();
    assert!(sock.exists());
    let s = Server::start(&state, &["--unix-socket", sock.to_str().unwrap()]);
    let (code, _) = curl(&sock, r#"{"query":"{ revision }"}"#, None);
    assert_eq!(code, 200);
    s.stop();
}
