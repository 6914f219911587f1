//! A file written as its body streams in and put in place whole on
//! commit (`tether-files`' temporary file, renamed over the destination),
//! for the dialects whose uploads are raw or multipart bodies (E2B's
//! `/files`, Runloop's `upload_file` and `write_file_contents`). Errors are
//! the file routes' own; each dialect puts them in its shape.

use std::sync::Arc;

use tether_files::Files;
use tokio::io::AsyncWriteExt;

use crate::Error;

/// One file being written (atomically, on commit; dropped uncommitted,
/// nothing is left behind).
pub(crate) struct AtomicWrite {
    upload: tether_files::Upload,
    file: tokio::fs::File,
}

impl AtomicWrite {
    /// Starts writing `dest` (parents made).
    pub(crate) async fn open(files: &Arc<Files>, dest: &str) -> Result<AtomicWrite, Error> {
        let (f, d) = (files.clone(), dest.to_owned());
        let mut upload = tokio::task::spawn_blocking(move || f.create(&d, None, true))
            .await
            .map_err(|e| Error::files("internal", 500, e.to_string()))??;
        let file = tokio::fs::File::from_std(upload.file()?);
        Ok(AtomicWrite { upload, file })
    }

    /// Appends a chunk.
    pub(crate) async fn write(&mut self, chunk: &[u8]) -> Result<(), Error> {
        self.file.write_all(chunk).await.map_err(|e| Error::files("io", 500, format!("writing: {e}")))
    }

    /// Puts the file in place.
    pub(crate) async fn commit(mut self) -> Result<(), Error> {
        self.file.flush().await.map_err(|e| Error::files("io", 500, format!("writing: {e}")))?;
        drop(self.file);
        let upload = self.upload;
        tokio::task::spawn_blocking(move || upload.commit())
            .await
            .map_err(|e| Error::files("internal", 500, e.to_string()))??;
        Ok(())
    }
}
