//! Access control and encryption on real sockets: an allowed peer's messages
//! arrive, a denied peer gets nothing through. Each side has its own context,
//! as two processes would (a ZAP handler serves one context).

use std::io::Write;

use clap::Parser;
use common::security::{KeyPair, SecurityArgs};
use common::sockets::{self, Tuning};
use common::{Action, Endpoints};

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    security: SecurityArgs,
}

fn tuning(flags: &[&str]) -> Tuning {
    let mut args = vec!["test"];
    args.extend_from_slice(flags);
    let f = Flags::parse_from(args);
    Tuning {
        security: common::security::Security::from_args(&f.security).unwrap(),
        ..Tuning::default()
    }
}

/// A PULL server with `server` flags, a PUSH client with `client` flags:
/// whether the client's message gets through, and how many peers the server
/// denied.
fn gets_through(server: &[&str], client: &[&str]) -> (bool, u64) {
    let (sctx, cctx) = (zmq::Context::new(), zmq::Context::new());
    let st = tuning(server);
    let pull = sockets::socket(&sctx, zmq::PULL, "pull", &st).unwrap();
    let at = Endpoints::single("tcp://127.0.0.1:*")
        .attach_secured(&pull, Action::Bind, "pull", st.security.as_deref())
        .unwrap();
    let ct = tuning(client);
    let push = sockets::socket(&cctx, zmq::PUSH, "push", &ct).unwrap();
    Endpoints::single(&at[0])
        .attach_secured(&push, Action::Connect, "push", ct.security.as_deref())
        .unwrap();
    let _ = push.send(&b"hello"[..], zmq::DONTWAIT);
    let got = pull.poll(zmq::POLLIN, 1500).unwrap() > 0;
    if got {
        assert_eq!(&pull.recv_bytes(0).unwrap()[..], b"hello");
    }
    let denied = st.security.as_ref().map_or(0, |s| s.denied());
    (got, denied)
}

#[test]
fn an_allow_list_lets_in_only_its_networks() {
    assert_eq!(gets_through(&["--allow", "127.0.0.0/8"], &[]), (true, 0));
    let (got, denied) = gets_through(&["--allow", "192.0.2.0/24,198.51.100.0/24"], &[]);
    assert!(!got, "a peer outside --allow got through");
    assert!(denied >= 1);
}

#[test]
fn plain_users_need_their_password() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "# users\nalice:s3cret\nbob:hunter2").unwrap();
    let auth = file.path().to_str().unwrap();
    let server = ["--auth-file", auth, "--allow", "127.0.0.1/32"];
    assert_eq!(
        gets_through(&server, &["--login", "alice:s3cret"]),
        (true, 0)
    );
    for client in [&["--login", "alice:wrong"][..], &["--login", "eve:s3cret"]] {
        let (got, denied) = gets_through(&server, client);
        assert!(!got, "{client:?} got through");
        assert!(denied >= 1, "{client:?}");
    }
    // Without credentials the mechanisms differ: the handshake fails.
    assert!(
        !gets_through(&server, &[]).0,
        "a peer without a login got through"
    );
}

#[test]
fn bad_security_flags_are_usage_errors() {
    let f = Flags::parse_from(["test", "--auth-file", "/nonexistent/users"]);
    let e = common::security::Security::from_args(&f.security).unwrap_err();
    assert!(
        e.is_usage() && e.to_string().contains("/nonexistent/users"),
        "{e}"
    );
    let f = Flags::parse_from(["test", "--login", "no-colon"]);
    assert!(common::security::Security::from_args(&f.security).is_err());
    assert!(Flags::try_parse_from(["test", "--allow", "10.0.0.0/33"]).is_err());
    let f = Flags::parse_from(["test", "--auth-file", "/x", "--curve-secret", "/y"]);
    let e = common::security::Security::from_args(&f.security).unwrap_err();
    assert!(e.to_string().contains("--curve-clients"), "{e}");
    let f = Flags::parse_from(["test", "--curve-server-key", "short"]);
    let e = common::security::Security::from_args(&f.security).unwrap_err();
    assert!(e.is_usage(), "{e}");
}

#[test]
fn curve_encrypts_and_refuses_a_wrong_server_key() {
    if zmq::has("curve") != Some(true) {
        eprintln!(
            "skipped: this build's libzmq has no CURVE (build against the system libzmq to run it)"
        );
        // Without CURVE the flags are refused, saying why.
        let f = Flags::parse_from(["test", "--curve-server-key", &"x".repeat(40)]);
        let e = common::security::Security::from_args(&f.security).unwrap_err();
        assert!(e.to_string().contains("no CURVE"), "{e}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pair = KeyPair::generate().unwrap();
    let key_file = dir.path().join("server.key");
    std::fs::write(&key_file, pair.to_file_text()).unwrap();
    let public = zmq::z85_encode(&pair.public).unwrap();
    let key_path = key_file.to_str().unwrap();
    assert_eq!(
        gets_through(
            &["--curve-secret", key_path],
            &["--curve-server-key", &public]
        ),
        (true, 0)
    );
    let other = zmq::z85_encode(&KeyPair::generate().unwrap().public).unwrap();
    let (got, _) = gets_through(
        &["--curve-secret", key_path],
        &["--curve-server-key", &other],
    );
    assert!(!got, "a client with the wrong server key got through");
    let (got, _) = gets_through(&["--curve-secret", key_path], &[]);
    assert!(!got, "a client without CURVE got through");

    // With --curve-clients, only listed client keys get in.
    let client = KeyPair::generate().unwrap();
    let client_file = dir.path().join("client.key");
    std::fs::write(&client_file, client.to_file_text()).unwrap();
    let clients = dir.path().join("clients");
    std::fs::write(
        &clients,
        format!(
            "# who may connect\n{}\n",
            zmq::z85_encode(&client.public).unwrap()
        ),
    )
    .unwrap();
    let server = [
        "--curve-secret",
        key_path,
        "--curve-clients",
        clients.to_str().unwrap(),
    ];
    let listed = [
        "--curve-server-key",
        &public,
        "--curve-secret",
        client_file.to_str().unwrap(),
    ];
    assert_eq!(gets_through(&server, &listed), (true, 0));
    let (got, denied) = gets_through(&server, &["--curve-server-key", &public]);
    assert!(!got && denied >= 1, "an unlisted client key got through");
}
