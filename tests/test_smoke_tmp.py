import ebooklet

def test_roundtrip_small(remote, tmp_path):
    conn = remote.conn()
    with ebooklet.open(conn, tmp_path / "a.blt", "c", "pickle") as db:
        for i in range(100):
            db[f"k{i}"] = i
        r = db.changes().push()
        assert r.committed
    with ebooklet.open(conn, tmp_path / "b.blt", "r") as db:
        assert len(db) == 100
        assert dict(db.items()) == {f"k{i}": i for i in range(100)}
