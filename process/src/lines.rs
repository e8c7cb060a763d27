//! Bounded line reading: a child that writes without newlines cannot grow our buffers.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// One line read by [`next_line`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// A whole line (newline removed) of at most the limit.
    Whole,
    /// A line longer than the limit: `buf` holds its first `max` bytes, the rest was skipped.
    Truncated,
}

/// Reads the next line into `buf` (cleared first), keeping at most `max` bytes of it.
/// `Ok(None)` at the end of the stream; a last line without a newline counts as a line.
pub(crate) async fn next_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<Line>> {
    buf.clear();
    let mut truncated = false;
    let mut any = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(any.then_some(if truncated {
                Line::Truncated
            } else {
                Line::Whole
            }));
        }
        any = true;
        let (chunk, used, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        let room = max.saturating_sub(buf.len());
        if chunk.len() > room {
            truncated = true;
        }
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        reader.consume(used);
        if done {
            return Ok(Some(if truncated {
                Line::Truncated
            } else {
                Line::Whole
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_bounded_and_the_rest_of_a_long_one_is_skipped() {
        let input: &[u8] = b"short\nabcdefghij\n\nlast";
        let mut reader = tokio::io::BufReader::with_capacity(3, input);
        let mut buf = Vec::new();
        let mut seen = Vec::new();
        while let Some(line) = next_line(&mut reader, &mut buf, 5).await.unwrap() {
            seen.push((String::from_utf8(buf.clone()).unwrap(), line));
        }
        assert_eq!(
            seen,
            vec![
                ("short".to_owned(), Line::Whole),
                ("abcde".to_owned(), Line::Truncated),
                (String::new(), Line::Whole),
                ("last".to_owned(), Line::Whole),
            ]
        );
    }
}
