//! Just enough HTTP/1.1 for the key-server API: one request per connection, bodies with
//! Content-Length, JSON both ways, bounded sizes (a hostile peer cannot make us allocate).

use std::io::{BufRead, BufReader, Read, Write};

const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 1 << 20;

pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn read_head<R: BufRead>(r: &mut R) -> std::io::Result<Vec<String>> {
    let mut lines = Vec::new();
    let mut total = 0;
    loop {
        let mut line = String::new();
        // Bounded: read_line alone would gather a line without a newline for ever.
        let left = (MAX_HEAD + 1 - total.min(MAX_HEAD)) as u64;
        let n = r.by_ref().take(left).read_line(&mut line)?;
        total += n;
        if n == 0 || total > MAX_HEAD {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "bad HTTP head",
            ));
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            return Ok(lines);
        }
        lines.push(line);
    }
}

fn parse_headers(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

fn read_body<R: Read>(r: &mut R, headers: &[(String, String)]) -> std::io::Result<Vec<u8>> {
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    if len > MAX_BODY {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "body too large",
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(body)
}

pub fn read_request<S: Read>(s: S) -> std::io::Result<Request> {
    let mut r = BufReader::new(s);
    let head = read_head(&mut r)?;
    let first = head
        .first()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "empty request"))?;
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let headers = parse_headers(&head[1..]);
    let body = read_body(&mut r, &headers)?;
    Ok(Request {
        method,
        path,
        headers,
        body,
    })
}

pub fn write_response<S: Write>(
    mut s: S,
    status: u16,
    body: &serde_json::Value,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        502 => "Bad Gateway",
        _ => "Error",
    };
    let b = serde_json::to_vec(body).unwrap_or_default();
    write!(s, "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", b.len())?;
    s.write_all(&b)?;
    s.flush()
}

pub fn write_request<S: Write>(
    mut s: S,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n", body.len())?;
    for (k, v) in headers {
        write!(s, "{k}: {v}\r\n")?;
    }
    s.write_all(b"\r\n")?;
    s.write_all(body)?;
    s.flush()
}

/// (status, body) of a response.
pub fn read_response<S: Read>(s: S) -> std::io::Result<(u16, Vec<u8>)> {
    let mut r = BufReader::new(s);
    let head = read_head(&mut r)?;
    let status = head
        .first()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad status line"))?;
    let headers = parse_headers(&head[1..]);
    Ok((status, read_body(&mut r, &headers)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that sends an endless line gets an error after MAX_HEAD bytes, not an
    /// allocation of all it sends.
    #[test]
    fn an_endless_head_line_is_refused_within_the_bound() {
        struct Endless(usize);
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                self.0 += buf.len();
                assert!(self.0 < 8 * MAX_HEAD, "read far past the bound");
                buf.fill(b'a');
                Ok(buf.len())
            }
        }
        let e = read_request(Endless(0)).err().expect("refused");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        let ok = read_request(&b"GET /v1/keys HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"[..])
            .expect("a real request");
        assert_eq!(
            (ok.method.as_str(), ok.path.as_str(), &ok.body[..]),
            ("GET", "/v1/keys", &b"{}"[..])
        );
    }
}
