//! The browser terminal page (`web/`), built by `build.rs` and embedded in
//! the binary, so the daemon serves it with no files on disk.

/// A file of the page, embedded from the build output.
macro_rules! page_file {
    ($name:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/web/", $name))
    };
}

/// The page's file for a request path: `(content type, bytes)`, or `None`
/// for a path that is not part of the page. `index.html` references its
/// assets relatively (`app.js`, `app.css`), so they live next to it.
pub(crate) fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    match path {
        "/" | "/index.html" => Some(("text/html; charset=utf-8", page_file!("index.html"))),
        "/app.js" => Some(("text/javascript; charset=utf-8", page_file!("app.js"))),
        "/app.css" => Some(("text/css; charset=utf-8", page_file!("app.css"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::asset;

    #[test]
    fn serves_the_page_and_nothing_else() {
        let (ty, html) = asset("/").expect("index");
        assert!(ty.starts_with("text/html"));
        assert!(std::str::from_utf8(html).expect("utf-8").contains("<title>tether</title>"));
        assert_eq!(asset("/index.html").map(|a| a.1), Some(html));
        assert!(asset("/app.js").is_some());
        assert!(asset("/app.css").is_some());
        assert!(asset("/v1/ws").is_none());
        assert!(asset("/../Cargo.toml").is_none());
    }
}
