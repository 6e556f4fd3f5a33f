//! A local destination through object_store: files written whole, large
//! files in parts, the manifest last, and what a reader finds.

use veil_storage::{Location, MANIFEST_NAME, PART_SIZE, Storage, manifest_of_dir};

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("veil-storage-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn a_folder_is_uploaded_with_its_manifest_last_and_reads_back() {
    let (source, dest) = (temp("source"), temp("dest"));
    std::fs::create_dir_all(source.join("sub")).unwrap();
    // One file over the part size (it goes up in three parts), one small.
    let big: Vec<u8> = (0..PART_SIZE * 2 + 12_345).map(|i| (i % 251) as u8).collect();
    std::fs::write(source.join("Observation-1.ndjson"), &big).unwrap();
    std::fs::write(source.join("sub/Patient-1.ndjson"), b"{\"resourceType\":\"Patient\"}\n").unwrap();
    std::fs::write(source.join(".Patient-2.ndjson.veil-partial"), b"unfinished").unwrap();

    let storage = Storage::open(&Location::parse(&format!("file://{}", dest.display())).unwrap()).unwrap();
    assert!(storage.read_manifest().unwrap_err().to_string().contains("holds no complete Veil export"));
    let mut seen = Vec::new();
    let manifest = storage.upload_dir(&source, None, &mut |f| seen.push(f.path.clone())).unwrap();
    assert_eq!(seen, ["Observation-1.ndjson", "sub/Patient-1.ndjson"], "unfinished files are not uploaded");
    assert_eq!(manifest.files, manifest_of_dir(&source).unwrap().files, "sizes and digests as computed locally");
    assert_eq!(storage.read_manifest().unwrap(), manifest);
    assert_eq!(storage.get("Observation-1.ndjson").unwrap(), big);
    assert_eq!(storage.list().unwrap(), ["Observation-1.ndjson", "sub/Patient-1.ndjson", MANIFEST_NAME]);
    // Nothing was left beside the files (object_store writes under a
    // temporary name and renames).
    let mut on_disk = veil_storage::files_below(&dest).unwrap();
    on_disk.sort();
    assert_eq!(on_disk, ["Observation-1.ndjson", "sub/Patient-1.ndjson"]);
    assert!(storage.put_bytes("../escape", b"x".to_vec()).is_err());
    let _ = std::fs::remove_dir_all(&source);
    let _ = std::fs::remove_dir_all(&dest);
}

#[test]
fn a_storage_can_be_dropped_in_async_code() {
    // A server keeps its Storage in its state, which its runtime drops on
    // a worker thread when it stops. The Storage's own runtime must not
    // panic there (tokio refuses to block in an async context).
    let dir = temp("dropped-async");
    let storage = Storage::open(&Location::Local(dir.clone())).unwrap();
    storage.put_bytes("a.txt", b"a".to_vec()).unwrap();
    let server = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap();
    server.block_on(async move { tokio::spawn(async move { drop(storage) }).await }).expect("dropped without a panic");
    let _ = std::fs::remove_dir_all(&dir);
}
