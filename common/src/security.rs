//! Access control and encryption for every socket that faces the network.
//!
//! ZeroMQ checks a peer in two places: the *security mechanism* of the ZMTP
//! handshake (NULL, PLAIN or CURVE, set per socket), and a **ZAP handler**
//! (ZeroMQ Authentication Protocol, RFC 27): a REP socket bound at
//! `inproc://zeromq.zap.01` in the same context, which libzmq asks about each
//! new peer of a socket that has a ZAP domain, and which answers 200 (let it
//! in) or 400 (drop it). zpipe's handler ([`Security`]) answers with:
//!
//! - `--allow CIDR` (repeatable, or a comma list): only peers from these
//!   networks; on the default build too (it needs no CURVE).
//! - `--auth-file FILE`: PLAIN user names and passwords (`user:password`, a
//!   line each, `#` comments); a socket that binds then requires them, and a
//!   socket that connects gives `--login user:password`. PLAIN sends the
//!   password in the clear: use it inside a trusted network or with CURVE.
//! - `--curve-secret FILE` and `--curve-server-key KEY`: CURVE encryption.
//!   A socket that binds is a CURVE server with the key pair in FILE (as
//!   `devices keygen` writes it); a socket that connects encrypts to the
//!   server's public KEY (Z85), with FILE's pair or a fresh one. Any client
//!   that knows the server's public key may connect, unless
//!   `--curve-clients FILE` lists the client public keys let in (clients
//!   then need their own `--curve-secret`). PLAIN and CURVE are two
//!   mechanisms: a socket has one, so `--auth-file` with `--curve-secret` is
//!   refused. CURVE needs a libzmq built with libsodium: the bundled one has
//!   none, so build with the system's (see the README); a binary without it
//!   refuses the flags.
//!
//! Which side a socket is follows from how it attaches: a socket whose
//! endpoints bind is a server, one whose endpoints connect is a client.
//! Denied peers are counted ([`Security::denied`]) and logged: the first 20
//! one by one, then one line at each power of two, so a flood cannot flood
//! the log.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Action, Error};

/// The security flags every role and device takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SecurityArgs {
    /// Let in only peers from these networks (CIDR, e.g. 10.1.0.0/16;
    /// repeat or comma-separate). Everyone when not given.
    #[arg(long, env = "ZPIPE_ALLOW", value_delimiter = ',')]
    pub allow: Vec<ipnet::IpNet>,
    /// PLAIN users (`user:password` a line) that may connect to the
    /// sockets this process binds.
    #[arg(long, env = "ZPIPE_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,
    /// PLAIN credentials (`user:password`) for the sockets this process
    /// connects.
    #[arg(long, env = "ZPIPE_LOGIN")]
    pub login: Option<String>,
    /// CURVE: this process's key pair (a file as `devices keygen` writes
    /// it). Sockets that bind become CURVE servers with it.
    #[arg(long, env = "ZPIPE_CURVE_SECRET")]
    pub curve_secret: Option<PathBuf>,
    /// CURVE: the public key (Z85, 40 characters) of the servers this
    /// process connects to. (Z85 has `-` among its characters, so a key
    /// may begin with one: it is still taken as the value.)
    #[arg(long, env = "ZPIPE_CURVE_SERVER_KEY", allow_hyphen_values = true)]
    pub curve_server_key: Option<String>,
    /// CURVE: only clients whose public keys (Z85, a line each) are in
    /// this file may connect to the sockets this process binds.
    #[arg(long, env = "ZPIPE_CURVE_CLIENTS")]
    pub curve_clients: Option<PathBuf>,
}

/// A CURVE key pair, binary.
#[derive(Clone)]
pub struct KeyPair {
    /// The public key: what peers are given (`--curve-server-key`,
    /// `--curve-clients`).
    pub public: [u8; 32],
    /// The secret key: stays in the key file, never logged.
    pub secret: [u8; 32],
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "KeyPair {{ public: {}, secret: (hidden) }}",
            zmq::z85_encode(&self.public).unwrap_or_default()
        )
    }
}

impl KeyPair {
    /// A fresh pair (needs CURVE).
    pub fn generate() -> Result<KeyPair, Error> {
        curve_available()?;
        let p = zmq::CurveKeyPair::new().map_err(|e| Error::zmq("making a CURVE key pair", e))?;
        Ok(KeyPair {
            public: p.public_key,
            secret: p.secret_key,
        })
    }

    /// The key file's text: `public = Z85` and `secret = Z85`.
    pub fn to_file_text(&self) -> String {
        format!(
            "# zpipe CURVE key pair: give the public key to whoever connects (--curve-server-key),\n# keep this file secret (--curve-secret)\npublic = {}\nsecret = {}\n",
            zmq::z85_encode(&self.public).unwrap_or_default(),
            zmq::z85_encode(&self.secret).unwrap_or_default()
        )
    }

    /// Reads a key file.
    pub fn read(path: &Path) -> Result<KeyPair, Error> {
        let bad =
            |reason: String| Error::Usage(format!("--curve-secret {}: {reason}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let (mut public, mut secret) = (None, None);
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err(bad(format!("{line:?} is not `key = value`")));
            };
            let key = z85_key(v.trim().trim_matches('"'))
                .map_err(|e| bad(format!("{}: {e}", k.trim())))?;
            match k.trim() {
                "public" | "public-key" => public = Some(key),
                "secret" | "secret-key" => secret = Some(key),
                other => return Err(bad(format!("unknown key {other:?}"))),
            }
        }
        match (public, secret) {
            (Some(public), Some(secret)) => Ok(KeyPair { public, secret }),
            _ => Err(bad("needs both `public = ...` and `secret = ...`".into())),
        }
    }
}

/// Decodes a Z85 CURVE key (40 characters).
pub fn z85_key(text: &str) -> Result<[u8; 32], String> {
    if text.len() != 40 {
        return Err(format!(
            "a CURVE key is 40 Z85 characters, this is {}",
            text.len()
        ));
    }
    let bytes = zmq::z85_decode(text).map_err(|e| format!("not Z85: {e}"))?;
    bytes
        .try_into()
        .map_err(|_| "not a 32-byte key".to_string())
}

/// Whether this build's libzmq has CURVE; the error says what to do.
pub fn curve_available() -> Result<(), Error> {
    if zmq::has("curve") == Some(true) {
        Ok(())
    } else {
        Err(Error::Usage(
            "this build's libzmq has no CURVE (the bundled libzmq is built without libsodium): build zpipe against the system libzmq, see \"Security\" in the README".into(),
        ))
    }
}

/// What a process's sockets require and present. Built once from the
/// flags ([`Security::from_args`]); `None` when no flag asks for anything.
#[derive(Debug)]
pub struct Security {
    allow: Vec<ipnet::IpNet>,
    users: Option<HashMap<String, String>>,
    login: Option<(String, String)>,
    curve: Option<KeyPair>,
    server_key: Option<[u8; 32]>,
    clients: Option<std::collections::HashSet<[u8; 32]>>,
    denied: AtomicU64,
}

/// The ZAP domain zpipe's sockets use.
const DOMAIN: &str = "zpipe";
/// Denials logged one by one before they are only counted.
const LOGGED_DENIALS: u64 = 20;

impl Security {
    /// Checks the flags; `Ok(None)` when none is given.
    pub fn from_args(args: &SecurityArgs) -> Result<Option<Arc<Security>>, Error> {
        if args.allow.is_empty()
            && args.auth_file.is_none()
            && args.login.is_none()
            && args.curve_secret.is_none()
            && args.curve_server_key.is_none()
            && args.curve_clients.is_none()
        {
            return Ok(None);
        }
        if args.auth_file.is_some() && args.curve_secret.is_some() {
            return Err(Error::Usage(
                "--auth-file (PLAIN) and --curve-secret (CURVE) are two mechanisms and a socket has one: to check who connects under CURVE, list their public keys with --curve-clients".into(),
            ));
        }
        if args.curve_clients.is_some() && args.curve_secret.is_none() {
            return Err(Error::Usage(
                "--curve-clients needs --curve-secret: only a CURVE server checks client keys"
                    .into(),
            ));
        }
        let users = match &args.auth_file {
            Some(path) => Some(read_users(path)?),
            None => None,
        };
        let login = match &args.login {
            Some(l) => {
                let (u, p) = l
                    .split_once(':')
                    .ok_or_else(|| Error::Usage("--login takes user:password".into()))?;
                Some((u.to_string(), p.to_string()))
            }
            None => None,
        };
        let curve = match &args.curve_secret {
            Some(path) => {
                curve_available()?;
                Some(KeyPair::read(path)?)
            }
            None => None,
        };
        let server_key = match &args.curve_server_key {
            Some(k) => {
                curve_available()?;
                Some(
                    z85_key(k.trim())
                        .map_err(|e| Error::Usage(format!("--curve-server-key: {e}")))?,
                )
            }
            None => None,
        };
        let clients = match &args.curve_clients {
            Some(path) => Some(read_client_keys(path)?),
            None => None,
        };
        Ok(Some(Arc::new(Security {
            allow: args.allow.clone(),
            users,
            login,
            curve,
            server_key,
            clients,
            denied: AtomicU64::new(0),
        })))
    }

    /// Peers turned away so far.
    pub fn denied(&self) -> u64 {
        self.denied.load(Ordering::Relaxed)
    }

    fn needs_zap(&self) -> bool {
        !self.allow.is_empty() || self.users.is_some() || self.curve.is_some()
    }

    /// Starts this context's ZAP handler if it has none yet (a handler
    /// bound by an earlier socket of this process serves them all).
    pub fn start_handler(self: &Arc<Self>, ctx: &zmq::Context) -> Result<(), Error> {
        if !self.needs_zap() {
            return Ok(());
        }
        let rep = ctx
            .socket(zmq::REP)
            .map_err(|e| Error::zmq("starting the ZAP handler", e))?;
        let _ = rep.set_linger(0);
        match rep.bind("inproc://zeromq.zap.01") {
            Ok(()) => {}
            // Already there: one handler serves the whole context.
            Err(zmq::Error::EADDRINUSE) => return Ok(()),
            Err(e) => return Err(Error::zmq("starting the ZAP handler", e)),
        }
        let me = Arc::clone(self);
        std::thread::Builder::new()
            .name("zap".into())
            .spawn(move || me.serve(rep))
            .map_err(|e| Error::Usage(format!("cannot start the ZAP handler: {e}")))?;
        Ok(())
    }

    /// Answers ZAP requests until the context ends.
    fn serve(&self, rep: zmq::Socket) {
        loop {
            let frames = match rep.recv_multipart(0) {
                Ok(f) => f,
                Err(zmq::Error::EINTR) => continue,
                Err(_) => return,
            };
            let reply = self.decide(&frames);
            if rep.send_multipart(reply, 0).is_err() {
                return;
            }
        }
    }

    /// One ZAP request: `version, request id, domain, address, identity,
    /// mechanism, credentials…`; the reply: `version, request id, status
    /// code, status text, user id, metadata`.
    fn decide(&self, frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let text = |i: usize| {
            frames
                .get(i)
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .unwrap_or_default()
        };
        let request_id = frames.get(1).cloned().unwrap_or_default();
        let (address, mechanism) = (text(3), text(5));
        let verdict = self.judge(&address, &mechanism, frames.get(6..).unwrap_or(&[]));
        let (code, status, user) = match verdict {
            Ok(user) => ("200", "OK".to_string(), user),
            Err(why) => {
                let n = self.denied.fetch_add(1, Ordering::Relaxed) + 1;
                if n <= LOGGED_DENIALS {
                    log::warn!("denied a {mechanism} peer from {address}: {why}");
                } else if n.is_power_of_two() {
                    log::warn!("{n} peers denied so far (the latest from {address}: {why})");
                }
                ("400", why, String::new())
            }
        };
        vec![
            b"1.0".to_vec(),
            request_id,
            code.as_bytes().to_vec(),
            status.into_bytes(),
            user.into_bytes(),
            Vec::new(),
        ]
    }

    fn judge(
        &self,
        address: &str,
        mechanism: &str,
        credentials: &[Vec<u8>],
    ) -> Result<String, String> {
        // The allow-list speaks of IP networks; a peer over ipc:// or
        // inproc:// (no IP address) is on this host.
        let ip = address
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok()
            // An IPv4 peer on a dual-stack socket shows as ::ffff:a.b.c.d.
            .map(|ip| ip.to_canonical());
        if let Some(ip) = ip
            && !self.allow.is_empty()
            && !self.allow.iter().any(|net| net.contains(&ip))
        {
            return Err(format!("{ip} is outside --allow"));
        }
        match mechanism {
            "PLAIN" => {
                let Some(users) = &self.users else {
                    return Err("PLAIN credentials where none are asked for".into());
                };
                let user = credentials
                    .first()
                    .map(|u| String::from_utf8_lossy(u).into_owned());
                let pass = credentials
                    .get(1)
                    .map(|p| String::from_utf8_lossy(p).into_owned());
                match (user, pass) {
                    (Some(u), Some(p)) if users.get(&u) == Some(&p) => Ok(u),
                    (Some(u), _) => Err(format!("wrong user or password ({u:?})")),
                    _ => Err("no PLAIN credentials".into()),
                }
            }
            // CURVE has already proved the client holds its key; which keys
            // may connect is --curve-clients' to say (any, without it).
            "CURVE" => match &self.clients {
                None => Ok(String::new()),
                Some(keys) => {
                    let key: Option<[u8; 32]> =
                        credentials.first().and_then(|k| k[..].try_into().ok());
                    match key {
                        Some(k) if keys.contains(&k) => Ok(zmq::z85_encode(&k).unwrap_or_default()),
                        Some(k) => Err(format!(
                            "client key {} is not in --curve-clients",
                            zmq::z85_encode(&k).unwrap_or_default()
                        )),
                        None => Err("no client key".into()),
                    }
                }
            },
            "NULL" if self.users.is_some() => Err("no credentials (--login) given".into()),
            _ => Ok(String::new()),
        }
    }

    /// Sets a socket's mechanism for how it attaches (servers bind, clients
    /// connect). Call before binding or connecting.
    pub fn apply(&self, socket: &zmq::Socket, action: Action) -> Result<(), Error> {
        let fail = |e| Error::zmq("setting up security", e);
        match action {
            Action::Bind => {
                if self.needs_zap() {
                    socket.set_zap_domain(DOMAIN).map_err(fail)?;
                }
                if let Some(pair) = &self.curve {
                    socket.set_curve_server(true).map_err(fail)?;
                    socket.set_curve_secretkey(&pair.secret).map_err(fail)?;
                } else if self.users.is_some() {
                    socket.set_plain_server(true).map_err(fail)?;
                }
            }
            Action::Connect => {
                if let Some(server) = &self.server_key {
                    let pair = match &self.curve {
                        Some(p) => p.clone(),
                        None => KeyPair::generate()?,
                    };
                    socket.set_curve_serverkey(server).map_err(fail)?;
                    socket.set_curve_publickey(&pair.public).map_err(fail)?;
                    socket.set_curve_secretkey(&pair.secret).map_err(fail)?;
                } else if let Some((u, p)) = &self.login {
                    socket.set_plain_username(Some(u)).map_err(fail)?;
                    socket.set_plain_password(Some(p)).map_err(fail)?;
                }
            }
        }
        Ok(())
    }
}

/// Reads `--curve-clients`: a Z85 public key a line (`#` comments).
fn read_client_keys(path: &Path) -> Result<std::collections::HashSet<[u8; 32]>, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("--curve-clients {}: {e}", path.display())))?;
    let mut keys = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = z85_key(line).map_err(|e| {
            Error::Usage(format!(
                "--curve-clients {} line {}: {e}",
                path.display(),
                i + 1
            ))
        })?;
        keys.insert(key);
    }
    Ok(keys)
}

/// Reads `--auth-file`: `user:password` a line.
fn read_users(path: &Path) -> Result<HashMap<String, String>, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("--auth-file {}: {e}", path.display())))?;
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (u, p) = line.split_once(':').ok_or_else(|| {
            Error::Usage(format!(
                "--auth-file {} line {}: expected user:password",
                path.display(),
                i + 1
            ))
        })?;
        users.insert(u.trim().to_string(), p.to_string());
    }
    if users.is_empty() {
        return Err(Error::Usage(format!(
            "--auth-file {}: no user in it",
            path.display()
        )));
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_key_beginning_with_a_hyphen_is_a_value_not_a_flag() {
        use clap::Parser;
        #[derive(Parser)]
        struct Flags {
            #[command(flatten)]
            security: SecurityArgs,
        }
        let key = format!("-w{}", "a".repeat(38));
        let flags = Flags::try_parse_from(["role", "--curve-server-key", &key]).unwrap();
        assert_eq!(
            flags.security.curve_server_key.as_deref(),
            Some(key.as_str())
        );
    }

    /// A handler's state as the flags would make it, without sockets.
    fn handler(allow: &[&str], users: &[(&str, &str)], clients: Option<&[[u8; 32]]>) -> Security {
        Security {
            allow: allow.iter().map(|n| n.parse().unwrap()).collect(),
            users: (!users.is_empty()).then(|| {
                users
                    .iter()
                    .map(|(u, p)| (u.to_string(), p.to_string()))
                    .collect()
            }),
            login: None,
            curve: None,
            server_key: None,
            clients: clients.map(|keys| keys.iter().copied().collect()),
            denied: AtomicU64::new(0),
        }
    }

    #[test]
    fn the_allow_list_reads_mapped_addresses_and_passes_local_peers() {
        let h = handler(&["192.0.2.0/24", "2001:db8::/32"], &[], None);
        for ok in [
            "192.0.2.7",
            "::ffff:192.0.2.7",
            "2001:db8::1",
            "[2001:db8::1]",
            "",
        ] {
            assert!(h.judge(ok, "NULL", &[]).is_ok(), "{ok:?} was refused");
        }
        for denied in ["198.51.100.1", "::ffff:198.51.100.1", "::1"] {
            let why = h.judge(denied, "NULL", &[]).unwrap_err();
            assert!(why.contains("outside --allow"), "{denied}: {why}");
        }
        // No list: everyone.
        assert!(
            handler(&[], &[], None)
                .judge("198.51.100.1", "NULL", &[])
                .is_ok()
        );
    }

    #[test]
    fn plain_peers_need_a_listed_user_and_its_password() {
        let h = handler(&[], &[("alice", "s3:cret")], None);
        let plain = |u: &str, p: &str| h.judge("127.0.0.1", "PLAIN", &[u.into(), p.into()]);
        assert_eq!(plain("alice", "s3:cret"), Ok("alice".into()));
        assert!(plain("alice", "s3").is_err());
        assert!(plain("eve", "s3:cret").is_err());
        assert!(h.judge("127.0.0.1", "PLAIN", &[]).is_err());
        assert!(h.judge("127.0.0.1", "NULL", &[]).is_err(), "no login given");
        // PLAIN where no user file asks for it.
        let open = handler(&[], &[], None);
        assert!(
            open.judge("127.0.0.1", "PLAIN", &[b"a".to_vec(), b"b".to_vec()])
                .is_err()
        );
    }

    #[test]
    fn curve_clients_decides_which_client_keys_get_in() {
        let (listed, other) = ([1u8; 32], [2u8; 32]);
        let h = handler(&[], &[], Some(&[listed]));
        let curve = |key: &[u8]| h.judge("127.0.0.1", "CURVE", &[key.to_vec()]);
        assert_eq!(curve(&listed), Ok(zmq::z85_encode(&listed).unwrap()));
        let why = curve(&other).unwrap_err();
        assert!(why.contains("not in --curve-clients"), "{why}");
        assert!(curve(&[1; 31]).is_err(), "a key of the wrong length");
        assert!(h.judge("127.0.0.1", "CURVE", &[]).is_err());
        // Without the list, any client that passed the CURVE handshake.
        assert!(
            handler(&[], &[], None)
                .judge("127.0.0.1", "CURVE", &[other.to_vec()])
                .is_ok()
        );
    }

    #[test]
    fn a_zap_reply_echoes_the_request_and_counts_denials() {
        let h = handler(&["127.0.0.0/8"], &[], None);
        let request = |address: &str| -> Vec<Vec<u8>> {
            ["1.0", "req-7", DOMAIN, address, "", "NULL"]
                .iter()
                .map(|f| f.as_bytes().to_vec())
                .collect()
        };
        let reply = h.decide(&request("127.0.0.1"));
        assert_eq!(
            reply.len(),
            6,
            "version, request id, code, text, user, metadata"
        );
        assert_eq!(
            (&reply[0][..], &reply[1][..], &reply[2][..]),
            (&b"1.0"[..], &b"req-7"[..], &b"200"[..])
        );
        assert_eq!(h.denied(), 0);
        let reply = h.decide(&request("198.51.100.1"));
        assert_eq!(&reply[2][..], b"400");
        assert!(String::from_utf8_lossy(&reply[3]).contains("outside --allow"));
        assert_eq!(h.denied(), 1);
        // A short request (libzmq never sends one) is answered, never a panic.
        assert_eq!(h.decide(&[b"1.0".to_vec()]).len(), 6);
    }

    #[test]
    fn a_key_file_reads_back_and_debug_hides_the_secret() {
        let pair = KeyPair {
            public: [3; 32],
            secret: [4; 32],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.key");
        std::fs::write(&path, pair.to_file_text()).unwrap();
        let back = KeyPair::read(&path).unwrap();
        assert_eq!((back.public, back.secret), (pair.public, pair.secret));
        let shown = format!("{pair:?}");
        assert!(
            shown.contains(&zmq::z85_encode(&pair.public).unwrap()),
            "{shown}"
        );
        assert!(
            !shown.contains(&zmq::z85_encode(&pair.secret).unwrap()),
            "{shown}"
        );
        let public_only = format!("public = {}\n", zmq::z85_encode(&pair.public).unwrap());
        std::fs::write(&path, public_only).unwrap();
        let e = KeyPair::read(&path).unwrap_err();
        assert!(e.is_usage() && e.to_string().contains("needs both"), "{e}");
        assert!(z85_key("short").unwrap_err().contains("40 Z85 characters"));
    }

    #[test]
    fn user_and_client_key_files_are_read_line_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users");
        std::fs::write(&users, "# who may connect\n\nalice:s3:cret\n bob :pw\n").unwrap();
        let read = read_users(&users).unwrap();
        assert_eq!(read.get("alice").map(String::as_str), Some("s3:cret"));
        assert_eq!(read.get("bob").map(String::as_str), Some("pw"));
        std::fs::write(&users, "alice:x\nbob\n").unwrap();
        let e = read_users(&users).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        std::fs::write(&users, "# nobody\n").unwrap();
        assert!(
            read_users(&users)
                .unwrap_err()
                .to_string()
                .contains("no user")
        );
        let keys = dir.path().join("clients");
        let key = zmq::z85_encode(&[5; 32]).unwrap();
        std::fs::write(&keys, format!("# clients\n{key}\n")).unwrap();
        assert!(read_client_keys(&keys).unwrap().contains(&[5; 32]));
        std::fs::write(&keys, format!("{key}\nnot-a-key\n")).unwrap();
        let e = read_client_keys(&keys).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }
}
