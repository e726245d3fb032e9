"""Central's schema, as migrations for each backend (numbered alike: the same tables after the same step).

SQLite's are the history of the reference server; PostgreSQL's start at today's schema. Both keep
events indexed for 100 million rows: the primary key (gw, id) is the dedup key of ingest,
(gw, seq) a gateway's history, (door, ts) a door's day, `received` the retention purge (a BRIN
index on PostgreSQL, as rows arrive in that order). Comments hold no semicolons: scripts are split on them.
"""

SQLITE_MIGRATIONS = ["""
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE entries (token TEXT PRIMARY KEY, row TEXT NOT NULL);
    CREATE TABLE changes (version INTEGER NOT NULL, token TEXT NOT NULL, row TEXT);  -- row NULL: deleted
    CREATE INDEX changes_version ON changes(version);
    CREATE TABLE events (gw TEXT NOT NULL, id TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL,
                         body TEXT NOT NULL, received REAL NOT NULL, PRIMARY KEY (gw, id));
    CREATE TABLE gateways (gw TEXT PRIMARY KEY, state TEXT, conn INTEGER, status_ts REAL, applied_version INTEGER,
                           applied_sha256 TEXT, last_reject TEXT, last_seen REAL);
""", """
    CREATE INDEX events_received ON events(received);  -- the retention purge
""", """
    -- new tenants: the identity as the gateway sealed it, opened here, decided by the office (no semicolons in these comments)
    CREATE TABLE registrations (id TEXT PRIMARY KEY, gw TEXT NOT NULL, event_id TEXT NOT NULL, door TEXT,
                                token TEXT NOT NULL,            -- the idno token (site key HMAC)
                                identity TEXT NOT NULL,         -- JSON (protocol.RegisteredIdentity)
                                received REAL NOT NULL, state TEXT NOT NULL DEFAULT 'pending',  -- pending | approved | rejected
                                building TEXT, room TEXT, lease_end TEXT, person TEXT, entries TEXT,  -- what approval listed
                                decided_by TEXT, decided_at REAL, note TEXT);
    CREATE INDEX registrations_state ON registrations(state);
    CREATE TABLE persons (ref TEXT PRIMARY KEY, name TEXT NOT NULL);  -- the gateways' opaque references, mapped back
    CREATE TABLE audit (ts REAL NOT NULL, who TEXT NOT NULL, action TEXT NOT NULL, subject TEXT, detail TEXT);
""", """
    -- the office: visitor passes issued (never their text), alarms and their webhook queue, care, staff
    CREATE TABLE passes (id TEXT PRIMARY KEY, host TEXT NOT NULL, doors TEXT NOT NULL, not_before REAL NOT NULL, not_after REAL NOT NULL,
                         uses INTEGER NOT NULL, issued_by TEXT NOT NULL, issued_at REAL NOT NULL, revoked_by TEXT, revoked_at REAL);
    CREATE TABLE alarms (id INTEGER PRIMARY KEY AUTOINCREMENT, gw TEXT NOT NULL, name TEXT NOT NULL, door TEXT NOT NULL DEFAULT '',
                         subject TEXT NOT NULL DEFAULT '', severity TEXT NOT NULL, raised REAL NOT NULL, raised_event TEXT,
                         cleared REAL, clear_note TEXT, acked_by TEXT, acked_at REAL);
    CREATE UNIQUE INDEX alarms_open ON alarms(gw, name, door, subject) WHERE cleared IS NULL;  -- one open incident per alarm
    CREATE INDEX alarms_raised ON alarms(raised);
    CREATE TABLE webhook_queue (alarm INTEGER PRIMARY KEY);  -- alarms not yet delivered to [webhook] url
    CREATE TABLE care (person TEXT PRIMARY KEY, quiet_s REAL NOT NULL, consent_by TEXT NOT NULL, consent_at REAL NOT NULL, last_seen REAL);
    CREATE TABLE staff (name TEXT PRIMARY KEY, hash TEXT NOT NULL, role TEXT NOT NULL, created REAL NOT NULL);
    CREATE INDEX events_ts ON events(ts);
    CREATE INDEX events_gw_seq ON events(gw, seq);  -- a gateway's newest events
""", """
    -- sites: a community with its own key, list and gateways (version and hash moved here from meta)
    CREATE TABLE sites (site TEXT PRIMARY KEY, key TEXT NOT NULL DEFAULT '', version INTEGER NOT NULL DEFAULT 0,
                        hash TEXT NOT NULL DEFAULT '0', changelog_from INTEGER NOT NULL DEFAULT 0, created REAL);
    INSERT INTO sites(site, version, hash, changelog_from)
        SELECT '', coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key='version'), 0),
               coalesce((SELECT value FROM meta WHERE key='hash'), '0'),
               coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key='changelog_from'), 0);
    CREATE TABLE site_entries (site TEXT NOT NULL, token TEXT NOT NULL, row TEXT NOT NULL, PRIMARY KEY (site, token));
    INSERT INTO site_entries SELECT '', token, row FROM entries;
    DROP TABLE entries;
    ALTER TABLE site_entries RENAME TO entries;
    ALTER TABLE changes ADD COLUMN site TEXT NOT NULL DEFAULT '';
    DROP INDEX changes_version;
    CREATE INDEX changes_site_version ON changes(site, version);
    ALTER TABLE gateways ADD COLUMN site TEXT;            -- NULL: not in any site (left, or never provisioned)
    ALTER TABLE gateways ADD COLUMN telemetry TEXT;       -- the last telemetry (JSON), for every central process
    ALTER TABLE gateways ADD COLUMN telemetry_at REAL;
    CREATE INDEX gateways_site ON gateways(site);
    ALTER TABLE events ADD COLUMN door TEXT;              -- a door's day: (door, ts)
    UPDATE events SET door = json_extract(body, '$.door');
    CREATE INDEX events_door_ts ON events(door, ts);
"""]


PG_MIGRATIONS = ["""
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE sites (site TEXT COLLATE "C" PRIMARY KEY, key TEXT NOT NULL DEFAULT '', version BIGINT NOT NULL DEFAULT 0,
                        hash TEXT NOT NULL DEFAULT '0', changelog_from BIGINT NOT NULL DEFAULT 0, created DOUBLE PRECISION);
    CREATE TABLE entries (site TEXT COLLATE "C" NOT NULL, token TEXT COLLATE "C" NOT NULL, row TEXT NOT NULL, PRIMARY KEY (site, token));
    CREATE TABLE changes (version BIGINT NOT NULL, token TEXT COLLATE "C" NOT NULL, row TEXT, site TEXT COLLATE "C" NOT NULL DEFAULT '');
    CREATE INDEX changes_site_version ON changes(site, version);
    CREATE TABLE events (gw TEXT COLLATE "C" NOT NULL, id TEXT COLLATE "C" NOT NULL, seq BIGINT NOT NULL, ts DOUBLE PRECISION NOT NULL,
                         body TEXT NOT NULL, received DOUBLE PRECISION NOT NULL, door TEXT,
                         rowid BIGINT GENERATED ALWAYS AS IDENTITY, PRIMARY KEY (gw, id));
    CREATE INDEX events_gw_seq ON events(gw, seq);
    CREATE INDEX events_door_ts ON events(door, ts);
    CREATE INDEX events_ts ON events(ts);
    CREATE INDEX events_rowid ON events(rowid);
    CREATE INDEX events_received ON events USING brin(received);
    CREATE TABLE gateways (gw TEXT COLLATE "C" PRIMARY KEY, state TEXT, conn BIGINT, status_ts DOUBLE PRECISION, applied_version BIGINT,
                           applied_sha256 TEXT, last_reject TEXT, last_seen DOUBLE PRECISION, site TEXT COLLATE "C",
                           telemetry TEXT, telemetry_at DOUBLE PRECISION);
    CREATE INDEX gateways_site ON gateways(site);
    CREATE TABLE registrations (id TEXT PRIMARY KEY, gw TEXT NOT NULL, event_id TEXT NOT NULL, door TEXT, token TEXT NOT NULL,
                                identity TEXT NOT NULL, received DOUBLE PRECISION NOT NULL, state TEXT NOT NULL DEFAULT 'pending',
                                building TEXT, room TEXT, lease_end TEXT, person TEXT, entries TEXT,
                                decided_by TEXT, decided_at DOUBLE PRECISION, note TEXT);
    CREATE INDEX registrations_state ON registrations(state);
    CREATE TABLE persons (ref TEXT PRIMARY KEY, name TEXT NOT NULL);
    CREATE TABLE audit (ts DOUBLE PRECISION NOT NULL, who TEXT NOT NULL, action TEXT NOT NULL, subject TEXT, detail TEXT,
                        rowid BIGINT GENERATED ALWAYS AS IDENTITY);
    CREATE INDEX audit_rowid ON audit(rowid);
    CREATE INDEX audit_who_ts ON audit(who, ts);
    CREATE TABLE passes (id TEXT PRIMARY KEY, host TEXT NOT NULL, doors TEXT NOT NULL, not_before DOUBLE PRECISION NOT NULL,
                         not_after DOUBLE PRECISION NOT NULL, uses INTEGER NOT NULL, issued_by TEXT NOT NULL, issued_at DOUBLE PRECISION NOT NULL,
                         revoked_by TEXT, revoked_at DOUBLE PRECISION);
    CREATE TABLE alarms (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, gw TEXT NOT NULL, name TEXT NOT NULL, door TEXT NOT NULL DEFAULT '',
                         subject TEXT NOT NULL DEFAULT '', severity TEXT NOT NULL, raised DOUBLE PRECISION NOT NULL, raised_event TEXT,
                         cleared DOUBLE PRECISION, clear_note TEXT, acked_by TEXT, acked_at DOUBLE PRECISION);
    CREATE UNIQUE INDEX alarms_open ON alarms(gw, name, door, subject) WHERE cleared IS NULL;
    CREATE INDEX alarms_raised ON alarms(raised);
    CREATE TABLE webhook_queue (alarm BIGINT PRIMARY KEY);
    CREATE TABLE care (person TEXT PRIMARY KEY, quiet_s DOUBLE PRECISION NOT NULL, consent_by TEXT NOT NULL,
                       consent_at DOUBLE PRECISION NOT NULL, last_seen DOUBLE PRECISION);
    CREATE TABLE staff (name TEXT PRIMARY KEY, hash TEXT NOT NULL, role TEXT NOT NULL, created DOUBLE PRECISION NOT NULL)
""", "", "", "", ""]  # steps 2-5 of SQLite's history are in step 1 here
