//! What the console answers: a status, a content type, a body and any extra headers. The
//! serving layer (serve.rs) adds the headers every console answer carries (a strict
//! Content-Security-Policy among them).

use maud::Markup;

pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

/// The console's style sheet: its only resource besides the pages.
const CSS: &str = include_str!("console.css");

/// The headers on every console answer: no script, no frame, no resource from elsewhere, no
/// caching of a page that shows the tree, no referrer leaving the server ("same-origin": with
/// "no-referrer" a browser sends `Origin: null` on a form, and the origin check refuses it).
pub const SECURITY_HEADERS: [(&str, &str); 6] = [
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
    ("Strict-Transport-Security", "max-age=31536000"),
];

impl Reply {
    pub fn html(status: u16, page: Markup) -> Reply {
        Reply {
            status,
            content_type: "text/html; charset=utf-8",
            body: page.into_string().into_bytes(),
            headers: Vec::new(),
        }
    }

    pub fn css() -> Reply {
        Reply {
            status: 200,
            content_type: "text/css; charset=utf-8",
            body: CSS.as_bytes().to_vec(),
            headers: Vec::new(),
        }
    }

    pub fn csv(body: Vec<u8>, filename: &str) -> Reply {
        Reply {
            status: 200,
            content_type: "text/csv; charset=utf-8",
            body,
            headers: vec![(
                "Content-Disposition",
                format!("attachment; filename=\"{filename}\""),
            )],
        }
    }

    /// 303 See Other: after a form, the browser GETs the page.
    pub fn redirect(location: &str) -> Reply {
        Reply {
            status: 303,
            content_type: "text/plain; charset=utf-8",
            body: Vec::new(),
            headers: vec![("Location", location.to_string())],
        }
    }

    pub fn not_found() -> Reply {
        Reply {
            status: 404,
            content_type: "text/plain; charset=utf-8",
            body: b"not found\n".to_vec(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }
}
