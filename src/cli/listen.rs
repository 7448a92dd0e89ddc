//! `serve --listen`: an address (`127.0.0.1:8080`, `[::1]:8080`,
//! `0.0.0.0:8080`), `localhost:PORT`, or a bare port (on 127.0.0.1).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

pub fn parse(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Some((host, port)) = s.rsplit_once(':') {
        let port: u16 = port.parse().map_err(|_| format!("'{port}' is not a port number"))?;
        if host.eq_ignore_ascii_case("localhost") || host.is_empty() {
            return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
        }
        return Err(format!("'{host}' is not an IP address (give an address, localhost:PORT or a port)"));
    }
    Err(format!("'{s}' is neither ADDRESS:PORT, localhost:PORT nor a port"))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn forms() {
        assert_eq!(parse("8081").unwrap().to_string(), "127.0.0.1:8081");
        assert_eq!(parse("localhost:9000").unwrap().to_string(), "127.0.0.1:9000");
        assert_eq!(parse(":9000").unwrap().to_string(), "127.0.0.1:9000");
        assert_eq!(parse("0.0.0.0:80").unwrap().to_string(), "0.0.0.0:80");
        assert_eq!(parse("[::1]:80").unwrap().to_string(), "[::1]:80");
        assert!(parse("example.com:80").is_err());
        assert!(parse("localhost:http").is_err());
        assert!(parse("").is_err());
    }
}
