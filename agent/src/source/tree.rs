//! A tree object's entries, read straight from its bytes (`<octal mode> <name>\0<20-byte id>`
//! per entry) instead of through libgit2's `Tree`, which allocates an entry table on top of the
//! object: a crafted directory of a million entries (~30 MB) cost ~70 MB parsed. Iterating the
//! bytes costs nothing beyond the object itself, and the caller sizes that from its header.
//!
//! Modes are read as libgit2 reads them (`normalize_filemode` in its `tree.c`), so a release
//! holds what libgit2's own checkout would write: any x bit makes an executable file.

use git2::Oid;

/// Git's file modes, normalised.
pub(super) const MODE_TREE: u32 = 0o040000;
pub(super) const MODE_BLOB: u32 = 0o100644;
pub(super) const MODE_EXEC: u32 = 0o100755;
pub(super) const MODE_LINK: u32 = 0o120000;
pub(super) const MODE_GITLINK: u32 = 0o160000;

/// The longest entry of a tree a release may hold: a 7-digit mode, a space, a 255-byte name, the
/// NUL and the id. A tree of `n` bytes therefore lists at least `n / MAX_ENTRY` entries.
pub(super) const MAX_ENTRY: u64 = 7 + 1 + 255 + 1 + 20;

/// One entry of a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry<'a> {
    /// One of the `MODE_*` constants.
    pub mode: u32,
    pub name: &'a [u8],
    pub id: Oid,
}

/// Entries of the tree object `data`, in the order written; an `Err` (then nothing more) where
/// the bytes are not a tree.
pub(super) fn entries(data: &[u8]) -> impl Iterator<Item = Result<Entry<'_>, &'static str>> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let parsed = parse(rest);
        match parsed {
            Ok((entry, after)) => {
                rest = after;
                Some(Ok(entry))
            }
            Err(e) => {
                rest = &[];
                Some(Err(e))
            }
        }
    })
}

fn parse(data: &[u8]) -> Result<(Entry<'_>, &[u8]), &'static str> {
    let space = data.iter().position(|&b| b == b' ').ok_or("an entry has no space after its mode")?;
    let digits = &data[..space];
    if digits.is_empty() || digits.len() > 7 || !digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
        return Err("an entry's mode is not an octal number");
    }
    let raw = digits.iter().fold(0u32, |m, d| m * 8 + u32::from(d - b'0'));
    if raw > 0o177777 {
        return Err("an entry's mode is out of range");
    }
    let rest = &data[space + 1..];
    let nul = rest.iter().position(|&b| b == 0).ok_or("an entry's name has no end")?;
    if nul == 0 {
        return Err("an entry has an empty name");
    }
    let (name, rest) = (&rest[..nul], &rest[nul + 1..]);
    if rest.len() < 20 {
        return Err("an entry's id is cut short");
    }
    let id = Oid::from_bytes(&rest[..20]).map_err(|_| "an entry's id is not an object id")?;
    Ok((Entry { mode: normalize(raw), name, id }, &rest[20..]))
}

/// libgit2's reading of a mode: directory bits make a tree; else any x bit an executable file;
/// else `16xxxx` a submodule, `12xxxx` a symlink, anything else a file.
fn normalize(mode: u32) -> u32 {
    match mode & 0o170000 {
        0o040000 => MODE_TREE,
        _ if mode & 0o111 != 0 => MODE_EXEC,
        0o160000 => MODE_GITLINK,
        0o120000 => MODE_LINK,
        _ => MODE_BLOB,
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::tree_bytes;
    use super::*;

    fn id(n: u8) -> Oid {
        Oid::from_bytes(&[n; 20]).unwrap()
    }

    #[test]
    fn reads_what_git_writes_and_normalises_modes_like_libgit2() {
        let data = tree_bytes(&[
            ("100644", b"a.txt", id(1)),
            ("100755", b"run", id(2)),
            ("40000", b"dir", id(3)),
            ("120000", b"link", id(4)),
            ("160000", b"sub", id(5)),
            ("100664", b"old", id(6)),
            ("644", b"bare", id(7)),
            ("120755", b"x-link", id(8)),
        ]);
        let read: Vec<_> = entries(&data).map(|e| e.unwrap()).map(|e| (e.mode, e.name.to_vec(), e.id)).collect();
        assert_eq!(
            read,
            [
                (MODE_BLOB, b"a.txt".to_vec(), id(1)),
                (MODE_EXEC, b"run".to_vec(), id(2)),
                (MODE_TREE, b"dir".to_vec(), id(3)),
                (MODE_LINK, b"link".to_vec(), id(4)),
                (MODE_GITLINK, b"sub".to_vec(), id(5)),
                (MODE_BLOB, b"old".to_vec(), id(6)),
                (MODE_BLOB, b"bare".to_vec(), id(7)),
                (MODE_EXEC, b"x-link".to_vec(), id(8)),
            ]
        );
        assert_eq!(entries(&[]).count(), 0);
    }

    #[test]
    fn damaged_bytes_end_in_an_error() {
        let good = tree_bytes(&[("100644", b"a", id(1))]);
        for bad in [
            tree_bytes(&[("100644", b"", id(1))]),
            tree_bytes(&[("10064x", b"a", id(1))]),
            tree_bytes(&[("", b"a", id(1))]),
            tree_bytes(&[("1777777", b"a", id(1))]),
            good[..good.len() - 1].to_vec(),
            b"100644 a".to_vec(),
            b"100644".to_vec(),
        ] {
            let mut all = good.clone();
            all.extend_from_slice(&bad);
            let read: Vec<_> = entries(&all).collect();
            assert_eq!(read.len(), 2, "{bad:?}");
            assert!(read[0].is_ok() && read[1].is_err(), "{bad:?}: {read:?}");
        }
    }
}
