//! The in-process tree that `coffer backup` and `coffer restore` use without FUSE
//! (fs/direct.rs) meets calls the kernel would have stopped before a mount saw them. Each
//! must leave every name its record names, as through a mount.

mod common;

use std::ffi::OsStr;

use coffer::fs::direct::Tree;
use common::Env;

/// The store of `env`, opened in this process as `coffer backup` opens it.
fn open_tree(env: &Env) -> Tree {
    let (_, keys) = common::stores::store_keys(env);
    let desc = coffer::store::Descriptor::load(&env.store).expect("descriptor");
    let store = coffer::store::OpenStore::open(&env.store, desc, keys).expect("open");
    Tree::new(store, false).expect("tree")
}

/// rename(2) between two names of one file does nothing (the kernel answers it before a
/// mount is asked). The in-process tree is asked: it must do nothing too, not take the
/// target's name out of the file's record, which left that name refused (EIO) for ever
/// after a backup relinked a file already linked there.
#[test]
fn a_rename_between_two_names_of_one_file_changes_nothing() {
    let env = Env::new();
    env.init();
    {
        let tree = open_tree(&env);
        let root = Tree::ROOT;
        let (st, h) = tree
            .create(root, OsStr::new("a"), 0o644, (0, 0))
            .expect("create");
        tree.write(&h, 0, b"content").expect("write");
        tree.close(h);
        tree.link(st.ino, root, OsStr::new("b")).expect("link");
        tree.rename(root, OsStr::new("a"), root, OsStr::new("b"))
            .expect("a rename onto another name of the same file succeeds");
        for name in ["a", "b"] {
            let got = tree.lookup(root, OsStr::new(name)).expect(name);
            assert_eq!(got.map(|s| s.ino), Some(st.ino), "{name} is still the file");
        }
        tree.finish().expect("finish");
    }
    let o = env.coffer(&["fsck", env.store.to_str().expect("utf-8")]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("0 problems"), "{out}");
    let dest = env.path("out");
    env.coffer_ok(&[
        "restore",
        &format!("{}:/", env.store.display()),
        dest.to_str().expect("utf-8"),
    ]);
    for name in ["a", "b"] {
        assert_eq!(std::fs::read(dest.join(name)).expect(name), b"content");
    }
}
