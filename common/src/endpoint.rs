//! Endpoints in CZMQ's convention: `@tcp://*:5557` binds, `>tcp://host:5557`
//! connects, and a bare endpoint takes the socket's natural action (the stable
//! parts of a pipeline bind, the dynamic parts connect). Several endpoints may be
//! given at once, separated by commas: `@tcp://*:5557,@ipc:///tmp/tasks`.
//!
//! Endpoints are checked when they are parsed, before any socket exists, so a
//! typo is one clear line and exit code 2 rather than a half-started pipeline.
//!
//! ```
//! use common::{Action, Endpoints};
//! let eps: Endpoints = "@tcp://*:5557,>tcp://10.0.0.2:5557".parse().unwrap();
//! assert_eq!(eps.0[0].action, Some(Action::Bind));
//! assert_eq!(eps.0[1].address, "tcp://10.0.0.2:5557");
//! assert!("udp://x:1".parse::<Endpoints>().is_err());
//! ```

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// What a socket does with an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `zmq_bind`: the stable side, which others find.
    Bind,
    /// `zmq_connect`: the dynamic side, which finds the stable one.
    Connect,
}

/// One endpoint with an optional explicit action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `Some` when the text began with `@` or `>`; `None` takes the socket's
    /// natural action.
    pub action: Option<Action>,
    /// The libzmq address, `transport://address`.
    pub address: String,
}

/// A comma-separated list of endpoints for one socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints(pub Vec<Endpoint>);

fn bad(text: &str, reason: impl Into<String>) -> Error {
    Error::Endpoint {
        text: text.to_string(),
        reason: reason.into(),
    }
}

impl FromStr for Endpoint {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let trimmed = text.trim();
        let (action, address) = match trimmed.as_bytes().first() {
            Some(b'@') => (Some(Action::Bind), &trimmed[1..]),
            Some(b'>') => (Some(Action::Connect), &trimmed[1..]),
            _ => (None, trimmed),
        };
        let Some((transport, rest)) = address.split_once("://") else {
            return Err(bad(
                text,
                "expected transport://address, e.g. tcp://localhost:5557",
            ));
        };
        match transport {
            "tcp" => check_tcp(text, rest)?,
            "ipc" | "inproc" => {
                if rest.is_empty() {
                    return Err(bad(text, format!("{transport}:// needs a name after it")));
                }
            }
            other => {
                return Err(bad(
                    text,
                    format!("unknown transport {other:?}: use tcp://, ipc:// or inproc://"),
                ));
            }
        }
        Ok(Endpoint {
            action,
            address: address.to_string(),
        })
    }
}

/// `host:port`, where host may be `*`, a name, an address, `[v6]` or an
/// interface, optionally preceded by `source;`, and port is a number or `*`.
fn check_tcp(text: &str, rest: &str) -> Result<(), Error> {
    let target = rest.rsplit(';').next().unwrap_or(rest);
    let Some((host, port)) = target.rsplit_once(':') else {
        return Err(bad(
            text,
            "tcp:// needs host:port, e.g. tcp://localhost:5557",
        ));
    };
    if host.is_empty() {
        return Err(bad(
            text,
            "tcp:// needs a host before the port (use * to bind every interface)",
        ));
    }
    if port != "*" && port.parse::<u16>().is_err() {
        return Err(bad(
            text,
            format!("port {port:?} is not a number from 0 to 65535 or *"),
        ));
    }
    Ok(())
}

impl FromStr for Endpoints {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let list = text
            .split(',')
            .filter(|part| !part.trim().is_empty())
            .map(str::parse)
            .collect::<Result<Vec<Endpoint>, Error>>()?;
        if list.is_empty() {
            return Err(bad(text, "no endpoint given"));
        }
        Ok(Endpoints(list))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.action {
            Some(Action::Bind) => write!(f, "@{}", self.address),
            Some(Action::Connect) => write!(f, ">{}", self.address),
            None => f.write_str(&self.address),
        }
    }
}

impl fmt::Display for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, ep) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{ep}")?;
        }
        Ok(())
    }
}

impl Endpoints {
    /// One endpoint with no explicit action.
    pub fn single(address: impl Into<String>) -> Self {
        Endpoints(vec![Endpoint {
            action: None,
            address: address.into(),
        }])
    }

    /// Whether any endpoint would bind, given the socket's natural action.
    pub fn any_bind(&self, natural: Action) -> bool {
        self.0
            .iter()
            .any(|ep| ep.action.unwrap_or(natural) == Action::Bind)
    }

    /// Binds or connects `socket` to every endpoint. Returns the addresses as
    /// libzmq resolved them (a bound `tcp://127.0.0.1:*` comes back with its real
    /// port), in the order given. `socket_name` names the socket in errors.
    pub fn attach(
        &self,
        socket: &zmq::Socket,
        natural: Action,
        socket_name: &'static str,
    ) -> Result<Vec<String>, Error> {
        self.attach_secured(socket, natural, socket_name, None)
    }

    /// [`Endpoints::attach`], with `security` applied first: a socket whose
    /// endpoints bind is a server, one whose endpoints connect a client (a
    /// socket cannot be both, so a mixed list is refused).
    pub fn attach_secured(
        &self,
        socket: &zmq::Socket,
        natural: Action,
        socket_name: &'static str,
        security: Option<&crate::security::Security>,
    ) -> Result<Vec<String>, Error> {
        if let Some(sec) = security {
            let mut actions = self.0.iter().map(|ep| ep.action.unwrap_or(natural));
            let first = actions.next().unwrap_or(natural);
            if actions.any(|a| a != first) {
                return Err(Error::Usage(format!(
                    "the {socket_name} socket both binds and connects ({self}): with security flags, a socket is either a server (binds) or a client (connects)"
                )));
            }
            sec.apply(socket, first)?;
        }
        let mut resolved = Vec::with_capacity(self.0.len());
        for ep in &self.0 {
            match ep.action.unwrap_or(natural) {
                Action::Bind => {
                    socket.bind(&ep.address).map_err(|e| Error::Bind {
                        endpoint: ep.address.clone(),
                        socket: socket_name,
                        reason: explain(e, Action::Bind),
                    })?;
                    let last = socket
                        .get_last_endpoint()
                        .map_err(|e| Error::zmq("reading the bound endpoint", e))?
                        .unwrap_or_else(|_| ep.address.clone());
                    resolved.push(last);
                }
                Action::Connect => {
                    if ep.address.starts_with("tcp://*:") {
                        return Err(Error::Connect {
                            endpoint: ep.address.clone(),
                            socket: socket_name,
                            reason: "cannot connect to the wildcard *; name a host".into(),
                        });
                    }
                    // libzmq resolves names later, in the background, and a
                    // typo would only show as a peer that never comes: say it
                    // now instead.
                    if let Some(reason) = unresolvable(&ep.address) {
                        return Err(Error::Connect {
                            endpoint: ep.address.clone(),
                            socket: socket_name,
                            reason,
                        });
                    }
                    socket.connect(&ep.address).map_err(|e| Error::Connect {
                        endpoint: ep.address.clone(),
                        socket: socket_name,
                        reason: explain(e, Action::Connect),
                    })?;
                    resolved.push(ep.address.clone());
                }
            }
        }
        Ok(resolved)
    }
}

/// Why a `tcp://host:port` to connect to names a host that does not resolve;
/// `None` for addresses, other transports and names that resolve.
fn unresolvable(address: &str) -> Option<String> {
    let rest = address.strip_prefix("tcp://")?;
    let target = rest.rsplit(';').next().unwrap_or(rest);
    let (host, port) = target.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    let port: u16 = port.parse().ok()?;
    match std::net::ToSocketAddrs::to_socket_addrs(&(host, port)).map(|mut addrs| addrs.next()) {
        Ok(Some(_)) => None,
        Ok(None) => Some(format!("the host name {host:?} has no address")),
        Err(e) => Some(format!("cannot resolve the host name {host:?}: {e}")),
    }
}

/// libzmq's errno in words a user can act on.
fn explain(e: zmq::Error, action: Action) -> String {
    match (e, action) {
        (zmq::Error::EADDRINUSE, _) => {
            "address already in use (another process has this port)".into()
        }
        (zmq::Error::EADDRNOTAVAIL, _) => "address not available on this host".into(),
        (zmq::Error::ENODEV, _) => "no such network interface".into(),
        (zmq::Error::EPROTONOSUPPORT, _) => "transport not supported by this libzmq".into(),
        (zmq::Error::EINVAL, Action::Connect) => {
            "invalid address (could the host name not be resolved?)".into()
        }
        (zmq::Error::EINVAL, Action::Bind) => "invalid address for bind".into(),
        (other, _) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_actions_and_lists() {
        let eps: Endpoints = " @tcp://*:5557 , >ipc:///tmp/x,inproc://y".parse().unwrap();
        assert_eq!(eps.0.len(), 3);
        assert_eq!(eps.0[0].action, Some(Action::Bind));
        assert_eq!(eps.0[0].address, "tcp://*:5557");
        assert_eq!(eps.0[1].action, Some(Action::Connect));
        assert_eq!(eps.0[2].action, None);
        assert_eq!(eps.to_string(), "@tcp://*:5557,>ipc:///tmp/x,inproc://y");
    }

    #[test]
    fn display_and_parse_round_trip() {
        for text in [
            "tcp://*:5557",
            "@tcp://127.0.0.1:*",
            ">tcp://10.0.0.2:5557",
            ">tcp://[::1]:5557",
            "@tcp://eth0;10.0.0.1:5557",
            "@ipc:///tmp/zpipe-tasks",
            ">inproc://tasks",
            "@tcp://*:5557,>tcp://hub:5558,ipc:///tmp/x",
        ] {
            let eps: Endpoints = text.parse().unwrap();
            assert_eq!(eps.to_string(), text);
            assert_eq!(eps.to_string().parse::<Endpoints>().unwrap(), eps);
            for ep in &eps.0 {
                assert_eq!(ep.to_string().parse::<Endpoint>().unwrap(), *ep);
            }
        }
        // Blanks around entries and empty entries are dropped, so the text
        // written back is the canonical form.
        let eps: Endpoints = " @tcp://*:1 ,, >tcp://h:2 ,".parse().unwrap();
        assert_eq!(eps.to_string(), "@tcp://*:1,>tcp://h:2");
        for empty in [",", " , ", "   "] {
            let err = empty.parse::<Endpoints>().unwrap_err();
            assert!(err.to_string().contains("no endpoint"), "{err}");
        }
    }

    #[test]
    fn the_natural_action_applies_where_none_is_written() {
        let eps: Endpoints = "tcp://*:5557,>tcp://h:1".parse().unwrap();
        assert!(eps.any_bind(Action::Bind));
        assert!(!eps.any_bind(Action::Connect));
        assert!(
            "@ipc:///tmp/x"
                .parse::<Endpoints>()
                .unwrap()
                .any_bind(Action::Connect)
        );
        let one = Endpoints::single("tcp://h:1");
        assert_eq!((one.0.len(), one.0[0].action), (1, None));
    }

    #[test]
    fn with_security_a_socket_either_binds_or_connects() {
        let args = crate::security::SecurityArgs {
            allow: vec!["127.0.0.0/8".parse().unwrap()],
            ..Default::default()
        };
        let sec = crate::security::Security::from_args(&args)
            .unwrap()
            .unwrap();
        let ctx = zmq::Context::new();
        let s = ctx.socket(zmq::PULL).unwrap();
        s.set_linger(0).unwrap();
        let mixed: Endpoints = "@tcp://127.0.0.1:*,>tcp://127.0.0.1:1".parse().unwrap();
        let err = mixed
            .attach_secured(&s, Action::Bind, "results", Some(&sec))
            .unwrap_err();
        assert!(
            err.is_usage() && err.to_string().contains("both binds and connects"),
            "{err}"
        );
        // The same list without security flags is fine.
        assert_eq!(mixed.attach(&s, Action::Bind, "results").unwrap().len(), 2);
    }

    #[test]
    fn refuses_bad_text() {
        for text in [
            "",
            "tcp://",
            "tcp://host",
            "tcp://:5557",
            "tcp://h:99999",
            "udp://h:1",
            "ipc://",
            "localhost:5557",
        ] {
            let err = text.parse::<Endpoints>().unwrap_err();
            assert!(err.is_usage(), "{text}: {err}");
        }
        assert!("tcp://[::1]:5557".parse::<Endpoints>().is_ok());
        assert!("tcp://eth0;10.0.0.1:5557".parse::<Endpoints>().is_ok());
    }

    #[test]
    fn port_in_use_is_a_clear_usage_error() {
        let ctx = zmq::Context::new();
        let a = ctx.socket(zmq::PULL).unwrap();
        a.set_linger(0).unwrap();
        let bound = Endpoints::single("tcp://127.0.0.1:*")
            .attach(&a, Action::Bind, "tasks")
            .unwrap();
        let b = ctx.socket(zmq::PULL).unwrap();
        b.set_linger(0).unwrap();
        let err = Endpoints::single(bound[0].clone())
            .attach(&b, Action::Bind, "tasks")
            .unwrap_err();
        assert!(err.is_usage());
        assert!(err.to_string().contains("already in use"), "{err}");
        let err = Endpoints::single("tcp://*:5557")
            .attach(&b, Action::Connect, "tasks")
            .unwrap_err();
        assert!(err.to_string().contains("wildcard"), "{err}");
        let err = Endpoints::single("tcp://no-such-host.invalid:5557")
            .attach(&b, Action::Connect, "tasks")
            .unwrap_err();
        assert!(
            err.is_usage() && err.to_string().contains("no-such-host.invalid"),
            "{err}"
        );
        assert!(
            Endpoints::single("tcp://localhost:5557")
                .attach(&b, Action::Connect, "tasks")
                .is_ok()
        );
    }
}
