//! SCRAM logins relayed to a TLS upstream. Channel binding ties a SCRAM login to the TLS
//! connection it runs on; a client's TLS connection ends at pgmld and the upstream's is
//! pgmld's own, so no binding can pass through. pgmld therefore never offers
//! `SCRAM-SHA-256-PLUS` to clients (libpq refuses a PLUS offer on a plain connection), and
//! refuses, with advice, a TLS client that says it could bind (gs2 flag `y`), which a
//! TLS upstream would reject with a less helpful message.

use bytes::BytesMut;

/// The mechanism clients must not see.
const PLUS: &[u8] = b"SCRAM-SHA-256-PLUS";

/// What a TLS client that would bind is told.
pub(crate) const BINDING_REFUSED: &str = "SCRAM channel binding cannot pass through pgmld to a TLS upstream (the client's TLS connection ends at pgmld); connect with channel_binding=disable, or without TLS to pgmld";

/// An AuthenticationSASL message (`R`, code 10) without `SCRAM-SHA-256-PLUS`; `None` when
/// it has no such entry, would be left with none, or is malformed (relayed as it is).
pub(crate) fn without_plus(msg: &[u8]) -> Option<BytesMut> {
    let list = msg.get(9..)?;
    let names: Vec<&[u8]> = list.split(|&b| b == 0).filter(|n| !n.is_empty()).collect();
    let kept: Vec<&[u8]> = names.iter().copied().filter(|n| *n != PLUS).collect();
    if kept.len() == names.len() || kept.is_empty() {
        return None;
    }
    let mut body = Vec::new();
    body.extend_from_slice(&10i32.to_be_bytes());
    for name in kept {
        body.extend_from_slice(name);
        body.push(0);
    }
    body.push(0);
    let mut out = BytesMut::with_capacity(body.len() + 5);
    out.extend_from_slice(b"R");
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Some(out)
}

/// Whether a SASLInitialResponse (`p`: mechanism, length, client-first-message) carries
/// the gs2 flag `y`: "I could bind, but I think the server cannot".
pub(crate) fn says_it_could_bind(msg: &[u8]) -> bool {
    let Some(body) = msg.get(5..) else {
        return false;
    };
    let Some(end) = body.iter().position(|&b| b == 0) else {
        return false;
    };
    body.get(end + 5..).is_some_and(|data| data.starts_with(b"y,"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sasl(names: &[&str]) -> Vec<u8> {
        let mut body = 10i32.to_be_bytes().to_vec();
        for n in names {
            body.extend_from_slice(n.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut m = b"R".to_vec();
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn plus_is_taken_out_of_the_offer() {
        let out = without_plus(&sasl(&["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"])).expect("rewritten");
        assert_eq!(&out[..], &sasl(&["SCRAM-SHA-256"])[..]);
        assert!(without_plus(&sasl(&["SCRAM-SHA-256"])).is_none());
        assert!(without_plus(&sasl(&["SCRAM-SHA-256-PLUS"])).is_none(), "never an empty offer");
        assert!(without_plus(b"R\0\0").is_none());
    }

    #[test]
    fn the_y_flag_is_found() {
        let initial = |data: &[u8]| {
            let mut body = b"SCRAM-SHA-256\0".to_vec();
            body.extend_from_slice(&(data.len() as i32).to_be_bytes());
            body.extend_from_slice(data);
            let mut m = b"p".to_vec();
            m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
            m.extend_from_slice(&body);
            m
        };
        assert!(says_it_could_bind(&initial(b"y,,n=,r=abc")));
        assert!(!says_it_could_bind(&initial(b"n,,n=,r=abc")));
        assert!(!says_it_could_bind(b"p\0\0\0\x04"));
    }
}
