//! The cluster's host table as the module holds it: each host's id and the address it listens
//! on (IPv4 and port), written to configfs by the agent from the cluster configuration. A peer
//! connection is accepted only from a host of this table, at its address
//! (`handshake::check_hello`).

/// Most hosts a table holds.
pub const MAX_HOSTS: usize = 32;

/// An IPv4 address and a TCP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Endpoint {
    /// The address, most significant byte first (as written: `10.0.0.1` is `[10, 0, 0, 1]`).
    pub ip: [u8; 4],
    /// The TCP port.
    pub port: u16,
}

impl core::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let [a, b, c, d] = self.ip;
        write!(f, "{a}.{b}.{c}.{d}:{}", self.port)
    }
}

/// Why a host table or an endpoint was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostsError {
    /// Not `A.B.C.D:PORT` with a non-zero port.
    BadEndpoint,
    /// A line that is not `ID A.B.C.D:PORT` with a non-zero decimal id.
    BadLine,
    /// Two lines with one id or one endpoint.
    Duplicate,
    /// More than [`MAX_HOSTS`] lines.
    TooMany,
}

impl HostsError {
    /// A message for humans.
    pub fn describe(&self) -> &'static str {
        match self {
            HostsError::BadEndpoint => "expected an IPv4 address and a port, e.g. 10.0.0.1:7790",
            HostsError::BadLine => "expected one host per line: ID A.B.C.D:PORT (id 1 or more)",
            HostsError::Duplicate => "a host id or an address appears twice",
            HostsError::TooMany => "more than 32 hosts",
        }
    }
}

fn number(s: &[u8], max: u64) -> Option<u64> {
    if s.is_empty() || s.len() > 10 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v = s.iter().try_fold(0u64, |v, &d| v.checked_mul(10)?.checked_add(u64::from(d - b'0')))?;
    (v <= max).then_some(v)
}

impl Endpoint {
    /// Parses `A.B.C.D:PORT` (surrounding blanks allowed).
    pub fn parse(s: &[u8]) -> Result<Endpoint, HostsError> {
        let s = s.trim_ascii();
        let colon = s.iter().rposition(|&c| c == b':').ok_or(HostsError::BadEndpoint)?;
        let (addr, port) = (&s[..colon], &s[colon + 1..]);
        let port = number(port, u64::from(u16::MAX)).filter(|&p| p > 0).ok_or(HostsError::BadEndpoint)?;
        let mut ip = [0u8; 4];
        let mut parts = addr.split(|&c| c == b'.');
        for o in ip.iter_mut() {
            *o = number(parts.next().ok_or(HostsError::BadEndpoint)?, 255).ok_or(HostsError::BadEndpoint)? as u8;
        }
        if parts.next().is_some() {
            return Err(HostsError::BadEndpoint);
        }
        Ok(Endpoint { ip, port: port as u16 })
    }
}

/// The host table: ids and their endpoints, in the order written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostTable {
    hosts: [(u32, Endpoint); MAX_HOSTS],
    len: usize,
}

impl HostTable {
    /// Parses one `ID A.B.C.D:PORT` per line (blank lines skipped).
    pub fn parse(text: &[u8]) -> Result<HostTable, HostsError> {
        let mut t = HostTable::default();
        for line in text.split(|&c| c == b'\n').map(<[u8]>::trim_ascii).filter(|l| !l.is_empty()) {
            let sp = line.iter().position(u8::is_ascii_whitespace).ok_or(HostsError::BadLine)?;
            let id = number(&line[..sp], u64::from(u32::MAX)).filter(|&i| i > 0).ok_or(HostsError::BadLine)? as u32;
            let ep = Endpoint::parse(&line[sp..])?;
            if t.hosts().iter().any(|&(i, e)| i == id || e == ep) {
                return Err(HostsError::Duplicate);
            }
            *t.hosts.get_mut(t.len).ok_or(HostsError::TooMany)? = (id, ep);
            t.len += 1;
        }
        Ok(t)
    }

    /// The hosts.
    pub fn hosts(&self) -> &[(u32, Endpoint)] {
        self.hosts.get(..self.len).unwrap_or(&[])
    }

    /// The endpoint of host `id`.
    pub fn endpoint(&self, id: u32) -> Option<Endpoint> {
        self.hosts().iter().find(|&&(i, _)| i == id).map(|&(_, e)| e)
    }

    /// The address (without port) of host `id`: what a connection from it comes from.
    pub fn address(&self, id: u32) -> Option<[u8; 4]> {
        self.endpoint(id).map(|e| e.ip)
    }
}
