//! The data ranges of a sparse file, found with `SEEK_DATA`/`SEEK_HOLE`: how the tests that
//! copy a hub file (and the `mutants` scenario, which includes this file with `#[path]`) take a
//! 100 MiB layout for a few hundred KiB.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rustix::fs::SeekFrom;
use rustix::io::Errno;

/// Ranges of data of a file, each with its offset, in order; the rest reads as zero.
pub type DataRanges = Vec<(u64, Vec<u8>)>;

/// The file at `path`: its length and its data ranges. Fails when the data exceeds `max_data`
/// bytes: the file was not sparse.
pub fn data_ranges(path: &Path, max_data: usize) -> Result<(u64, DataRanges), String> {
    let file = File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let len = file.metadata().map_err(|e| format!("metadata: {e}"))?.len();
    let mut chunks = Vec::new();
    let mut at = 0;
    let mut data = 0;
    while at < len {
        let start = match rustix::fs::seek(&file, SeekFrom::Data(at)) {
            Ok(start) => start,
            Err(Errno::NXIO) => break, // only a hole is left
            Err(e) => return Err(format!("SEEK_DATA at {at}: {e}")),
        };
        let end = rustix::fs::seek(&file, SeekFrom::Hole(start))
            .map_err(|e| format!("SEEK_HOLE at {start}: {e}"))?
            .min(len);
        data += (end - start) as usize;
        if data > max_data {
            return Err(format!(
                "the file is not sparse: over {max_data} bytes of data in {len}"
            ));
        }
        let mut bytes = vec![0; (end - start) as usize];
        file.read_exact_at(&mut bytes, start)
            .map_err(|e| format!("read {} bytes at {start}: {e}", bytes.len()))?;
        chunks.push((start, bytes));
        at = end;
    }
    Ok((len, chunks))
}
