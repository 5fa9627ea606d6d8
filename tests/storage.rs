//! The storage layer against the loopback GCS fake, through the real
//! `object_store` GCS backend: every request kind the checkpoints use, and
//! retries of injected faults.

mod support;

use dalle_xla::storage::{self, block_on, RetryPolicy, StorageOptions};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use support::gcs_fake::{Fault, GcsFake};

fn payload(s: &str) -> PutPayload {
    PutPayload::from(s.to_string())
}

#[test]
fn put_get_range_head_delete() {
    let fake = GcsFake::start();
    let loc = fake.open("bucket", "runs/a", RetryPolicy::fast(0));
    let path = loc.child("dir/file with space.bin");
    block_on(async {
        loc.store.put(&path, payload("hello world")).await.unwrap();
        assert_eq!(loc.store.get(&path).await.unwrap().bytes().await.unwrap().as_ref(), b"hello world");
        assert_eq!(loc.store.get_range(&path, 6..11).await.unwrap().as_ref(), b"world");
        let meta = loc.store.head(&path).await.unwrap();
        assert_eq!(meta.size, 11);
        assert!(meta.e_tag.is_some());
        loc.store.delete(&path).await.unwrap();
        assert!(matches!(loc.store.head(&path).await, Err(object_store::Error::NotFound { .. })));
    });
    // The key reached the fake decoded, under the prefix.
    assert!(fake.log().iter().any(|l| l.method == "PUT" && l.key == "runs/a/dir/file with space.bin"));
}

#[test]
fn create_only_put_refuses_to_overwrite() {
    let fake = GcsFake::start();
    let loc = fake.open("bucket", "", RetryPolicy::fast(0));
    let path = loc.child("COMMIT");
    let create = || PutOptions { mode: PutMode::Create, ..Default::default() };
    block_on(async {
        loc.store.put_opts(&path, payload("first"), create()).await.unwrap();
        let second = loc.store.put_opts(&path, payload("second"), create()).await;
        assert!(matches!(second, Err(object_store::Error::AlreadyExists { .. })), "{second:?}");
    });
    assert_eq!(fake.object("bucket", "COMMIT").unwrap().data, b"first");
    let creates: Vec<_> = fake.log().into_iter().filter(|l| l.method == "PUT").collect();
    assert_eq!(creates.len(), 2);
    assert!(creates.iter().all(|l| l.if_generation_match.as_deref() == Some("0")));
    assert_eq!(creates[1].status, 412);
}

#[test]
fn listing_with_delimiter_and_continuation() {
    let fake = GcsFake::start();
    fake.set_page_size(2);
    let loc = fake.open("bucket", "run", RetryPolicy::fast(0));
    let names = ["a/1", "a/2", "b/1", "c", "d", "e/x/y"];
    block_on(async {
        for n in names {
            loc.store.put(&loc.child(n), payload(n)).await.unwrap();
        }
        // Outside the prefix: must not be listed.
        loc.store.put(&Path::from("other/z"), payload("z")).await.unwrap();
        let mut all: Vec<String> =
            loc.store.list(Some(&loc.prefix)).map_ok(|m| m.location.to_string()).try_collect().await.unwrap();
        all.sort();
        let want: Vec<String> = names.iter().map(|n| format!("run/{n}")).collect();
        assert_eq!(all, want);
        let top = loc.store.list_with_delimiter(Some(&loc.prefix)).await.unwrap();
        let prefixes: Vec<String> = top.common_prefixes.iter().map(|p| p.to_string()).collect();
        let objects: Vec<String> = top.objects.iter().map(|m| m.location.to_string()).collect();
        assert_eq!(prefixes, ["run/a", "run/b", "run/e"]);
        assert_eq!(objects, ["run/c", "run/d"]);
    });
    let pages = fake.log().iter().filter(|l| l.method == "GET" && l.query.iter().any(|(k, _)| k == "continuation-token")).count();
    assert!(pages >= 2, "expected paginated listing, saw {pages} continuation requests");
}

#[test]
fn multipart_upload_and_copy() {
    let fake = GcsFake::start();
    let loc = fake.open("bucket", "", RetryPolicy::fast(0));
    let data: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
    let path = loc.child("big");
    block_on(async {
        let mut upload = loc.store.put_multipart(&path).await.unwrap();
        for chunk in data.chunks(1024) {
            upload.put_part(PutPayload::from(chunk.to_vec())).await.unwrap();
        }
        upload.complete().await.unwrap();
        loc.store.copy(&path, &loc.child("copy")).await.unwrap();
        let copy_if_new = loc.store.copy_if_not_exists(&path, &loc.child("copy")).await;
        assert!(matches!(copy_if_new, Err(object_store::Error::AlreadyExists { .. })), "{copy_if_new:?}");
    });
    assert_eq!(fake.object("bucket", "big").unwrap().data, data);
    assert_eq!(fake.object("bucket", "copy").unwrap().data, data);
    assert_eq!(fake.open_uploads(), 0);
    let parts = fake.log().iter().filter(|l| l.query.iter().any(|(k, _)| k == "partNumber")).count();
    assert_eq!(parts, 3);
}

#[test]
fn server_errors_and_dropped_connections_are_retried() {
    let fake = GcsFake::start();
    let loc = fake.open("bucket", "", RetryPolicy::fast(5));
    fake.inject(2, Fault::Status(503), Some("PUT"));
    fake.inject(1, Fault::Drop, Some("PUT"));
    fake.inject(2, Fault::Status(500), Some("GET"));
    let path = loc.child("x");
    block_on(async {
        loc.store.put(&path, payload("survived")).await.unwrap();
        assert_eq!(loc.store.get(&path).await.unwrap().bytes().await.unwrap().as_ref(), b"survived");
    });
    let statuses: Vec<u16> = fake.log().iter().filter(|l| l.method == "PUT").map(|l| l.status).collect();
    assert_eq!(statuses, [503, 503, 0, 200], "two 5xx, one dropped connection, then success");
}

#[test]
fn persistent_failures_surface_as_errors_after_the_retries() {
    let fake = GcsFake::start();
    let loc = fake.open("bucket", "", RetryPolicy::fast(2));
    fake.inject(usize::MAX, Fault::Status(503), None);
    let result = block_on(loc.store.put(&loc.child("x"), payload("lost")));
    let err = result.expect_err("a store that always answers 503 cannot succeed");
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(fake.log().len(), 3, "first attempt plus two retries");
    assert!(fake.object("bucket", "x").is_none());
}

#[test]
fn whole_object_retry_wrapper_retries_only_transient_errors() {
    let store = storage::open("memory://retry-wrapper").unwrap();
    let policy = RetryPolicy::fast(3);
    let mut calls = 0;
    let result: Result<u32, _> = block_on(storage::retry::retrying(&policy, "test op", || {
        calls += 1;
        let n = calls;
        async move {
            if n < 3 {
                Err(object_store::Error::Generic { store: "test", source: "flaky".into() })
            } else {
                Ok(n)
            }
        }
    }));
    assert_eq!(result.unwrap(), 3);
    let mut calls = 0;
    let nope = Path::from("nope");
    let missing = block_on(storage::retry::retrying(&policy, "test op", || {
        calls += 1;
        store.store.head(&nope)
    }));
    assert!(matches!(missing, Err(object_store::Error::NotFound { .. })));
    assert_eq!(calls, 1, "a missing object is not retried");

    // Nor is a range past an object's end, on any store.
    let fake = GcsFake::start();
    let dir = std::env::temp_dir().join(format!("range-retry-{}", std::process::id()));
    let stores = [fake.open("bucket", "ranges", RetryPolicy::fast(1)), storage::open(dir.to_str().unwrap()).unwrap(), store];
    for location in &stores {
        let short = location.child("short");
        block_on(location.store.put(&short, payload("abc"))).unwrap();
        for range in [10..20u64, 0..10] {
            let mut calls = 0;
            let past_the_end = block_on(storage::retry::retrying(&policy, "test op", || {
                calls += 1;
                location.store.get_opts(&short, object_store::GetOptions::default().with_range(Some(range.clone())))
            }));
            let start = range.start;
            if start == 0 {
                // Begun inside the object, it is answered with what there is.
                assert_eq!(past_the_end.map(|r| r.meta.size).ok(), Some(3), "{}", location.url);
            } else {
                assert!(past_the_end.is_err(), "{}", location.url);
                assert_eq!(calls, 1, "a range past the end of an object in {} is not retried", location.url);
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_options_name_the_key() {
    let bad_url = StorageOptions { gcs_base_url: Some("localhost:1234".into()), ..Default::default() };
    let err = storage::open_with("gs://b/p", &bad_url).unwrap_err().to_string();
    assert!(err.contains("storage.gcs_base_url"), "{err}");
    let bad_key = StorageOptions { gcs_service_account_key: Some("{not json".into()), ..Default::default() };
    let err = storage::open_with("gs://b/p", &bad_key).unwrap_err().to_string();
    assert!(err.contains("storage.gcs_service_account_key"), "{err}");
    let mut bad_retry = StorageOptions::default();
    bad_retry.retry.initial_backoff_secs = -1.0;
    let err = storage::open_with("memory://x", &bad_retry).unwrap_err().to_string();
    assert!(err.contains("storage.retry.initial_backoff_secs"), "{err}");
    let err = storage::open("ftp://b/p").unwrap_err().to_string();
    assert!(err.contains("unsupported scheme 'ftp'"), "{err}");
}

#[test]
fn fake_dates_and_ranges() {
    use std::time::{Duration, UNIX_EPOCH};
    use support::gcs_fake::{http_date, parse_range, rfc3339};
    let t = UNIX_EPOCH + Duration::from_secs(784_111_777); // 1994-11-06 08:49:37 UTC, a Sunday
    assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_eq!(rfc3339(t), "1994-11-06T08:49:37.000Z");
    assert_eq!(parse_range("bytes=2-4", 10), Some((2, 4)));
    assert_eq!(parse_range("bytes=7-", 10), Some((7, 9)));
    assert_eq!(parse_range("bytes=-3", 10), Some((7, 9)));
    assert_eq!(parse_range("bytes=10-", 10), None);
}
