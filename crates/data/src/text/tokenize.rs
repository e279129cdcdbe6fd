//! Text to token ids: bytes, or a byte-level BPE trained with HuggingFace's `tokenizers`.

use std::path::Path;

use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::Tokenizer;

use crate::error::DataError;

fn tok_err(context: impl Into<String>) -> impl FnOnce(tokenizers::Error) -> DataError {
    let context = context.into();
    move |e| DataError::Tokenizer {
        context,
        message: e.to_string(),
    }
}

/// Cuts `text` into pieces of about `target` bytes, only right after a `'\n'` that is followed by
/// a non-whitespace ASCII character: the byte-level pre-tokenizer never joins across such a point, so
/// encoding the pieces separately gives exactly the tokens of the whole.
pub(crate) fn chunks(text: &str, target: usize) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut cut = (start + target).min(text.len());
        while cut < text.len() {
            if bytes[cut - 1] == b'\n' && bytes[cut].is_ascii() && !bytes[cut].is_ascii_whitespace()
            {
                break;
            }
            cut += 1;
        }
        out.push(&text[start..cut]);
        start = cut;
    }
    out
}

const CHUNK: usize = 1 << 20;

/// A byte-level BPE with `vocab_size` tokens trained on `texts`, saved to `save_to`.
pub(crate) fn train_bpe(
    texts: &[String],
    vocab_size: usize,
    min_frequency: u64,
    save_to: &Path,
) -> Result<Tokenizer, DataError> {
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(min_frequency)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    let pieces = texts.iter().flat_map(|t| chunks(t, CHUNK));
    tokenizer
        .train(&mut trainer, pieces)
        .map_err(tok_err("training"))?;
    tokenizer
        .save(save_to, false)
        .map_err(tok_err(format!("saving {}", save_to.display())))?;
    Ok(tokenizer)
}

/// Loads a `tokenizer.json`.
pub(crate) fn load_bpe(path: &Path) -> Result<Tokenizer, DataError> {
    Tokenizer::from_file(path).map_err(tok_err(format!("loading {}", path.display())))
}

/// Token ids of `text`, encoded piecewise (see [`chunks`]).
pub(crate) fn encode_bpe(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>, DataError> {
    let pieces = chunks(text, CHUNK);
    let encodings = tokenizer
        .encode_batch(pieces, false)
        .map_err(tok_err("encoding"))?;
    Ok(encodings
        .iter()
        .flat_map(|e| e.get_ids().iter().copied())
        .collect())
}

/// Text of `ids` (lossy where ids split a character).
pub(crate) fn decode_bpe(tokenizer: &Tokenizer, ids: &[u32]) -> Result<String, DataError> {
    tokenizer.decode(ids, false).map_err(tok_err("decoding"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_text_and_cut_only_after_newlines() {
        let text = "alpha beta\n  gamma\ndelta\n\nepsilon é\nzeta\n".repeat(50);
        let pieces = chunks(&text, 30);
        assert!(pieces.len() > 10);
        assert_eq!(pieces.concat(), text);
        for p in &pieces[..pieces.len() - 1] {
            assert!(p.ends_with('\n'), "{p:?}");
        }
        for p in &pieces[1..] {
            assert!(!p.starts_with(char::is_whitespace), "{p:?}");
        }
    }
}
