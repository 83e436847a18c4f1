//! A database's schema as catalog rows, object by object, and the differences between two.
//!
//! Every category maps an object's stable name (never an OID) to a text description of what the
//! external contract depends on: column types, defaults and order, constraint, index, function,
//! view and trigger definitions as PostgreSQL prints them, privileges per grantee, comments,
//! roles and memberships. Objects that belong to an extension (btree_gist's functions, for one)
//! are compared through the extension's version only. Not compared, because they are state rather
//! than schema: sequence positions, statistics, `pg_attribute.atthasmissing` (left by `ALTER
//! TABLE ... ADD COLUMN ... DEFAULT` on an existing table; invisible to every query).

use std::collections::BTreeMap;

use sqlx::PgPool;

/// `NOT EXISTS` an extension membership of the object `(classid, objid)`.
macro_rules! not_extension_member {
    ($classid:literal, $objid:literal) => {
        concat!(
            "NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = '",
            $classid,
            "'::regclass AND e.objid = ",
            $objid,
            " AND e.deptype = 'e')"
        )
    };
}

/// Categories and their queries; each yields `(key text, description text)` rows.
const CATEGORIES: &[(&str, &str)] = &[
    (
        "extensions",
        "SELECT extname::text, extversion || ' in ' || extnamespace::regnamespace::text
         FROM pg_extension",
    ),
    (
        "relations",
        concat!(
            "SELECT c.relname::text,
                    concat_ws(' ', 'kind=' || c.relkind::text, 'persistence=' || c.relpersistence::text,
                              'owner=' || pg_get_userbyid(c.relowner),
                              'partition_key=' || pg_get_partkeydef(c.oid),
                              'partition_of=' || (SELECT i.inhparent::regclass::text FROM pg_inherits i
                                                  WHERE i.inhrelid = c.oid),
                              'partition_bound=' || pg_get_expr(c.relpartbound, c.oid),
                              'options=' || c.reloptions::text,
                              'access_method=' || am.amname,
                              'row_security=' || c.relrowsecurity)
             FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN pg_am am ON am.oid = c.relam
             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
               AND ",
            not_extension_member!("pg_class", "c.oid")
        ),
    ),
    (
        "columns",
        concat!(
            "SELECT c.relname || '.' || a.attname,
                    concat_ws(' ',
                              'position=' || row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
                              'type=' || format_type(a.atttypid, a.atttypmod),
                              CASE WHEN a.attnotnull THEN 'not_null' ELSE 'nullable' END,
                              'default=' || pg_get_expr(d.adbin, d.adrelid),
                              'identity=' || nullif(a.attidentity::text, ''),
                              'generated=' || nullif(a.attgenerated::text, ''),
                              'collation=' || CASE WHEN a.attcollation <> t.typcollation
                                                   THEN co.collname::text END)
             FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_type t ON t.oid = a.atttypid
             LEFT JOIN pg_collation co ON co.oid = a.attcollation
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
               AND a.attnum > 0 AND NOT a.attisdropped AND ",
            not_extension_member!("pg_class", "c.oid")
        ),
    ),
    (
        "constraints",
        concat!(
            "SELECT coalesce(c.relname::text, '-') || '.' || con.conname,
                    con.contype::text || ' ' || pg_get_constraintdef(con.oid, true)
                    || CASE WHEN con.convalidated THEN '' ELSE ' (not validated)' END
             FROM pg_constraint con
             JOIN pg_namespace n ON n.oid = con.connamespace
             LEFT JOIN pg_class c ON c.oid = con.conrelid
             WHERE n.nspname = 'public' AND ",
            not_extension_member!("pg_constraint", "con.oid")
        ),
    ),
    (
        "indexes",
        concat!(
            "SELECT ic.relname::text,
                    pg_get_indexdef(i.indexrelid)
                    || CASE WHEN i.indisclustered THEN ' (clustered)' ELSE '' END
                    || CASE WHEN i.indisvalid THEN '' ELSE ' (invalid)' END
             FROM pg_index i
             JOIN pg_class ic ON ic.oid = i.indexrelid
             JOIN pg_namespace n ON n.oid = ic.relnamespace
             WHERE n.nspname = 'public' AND ",
            not_extension_member!("pg_class", "ic.oid")
        ),
    ),
    (
        "functions",
        concat!(
            "SELECT p.oid::regprocedure::text,
                    CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid)
                         ELSE 'kind ' || p.prokind::text END
                    || ' owner=' || pg_get_userbyid(p.proowner)
             FROM pg_proc p
             JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'public' AND ",
            not_extension_member!("pg_proc", "p.oid")
        ),
    ),
    (
        "views",
        concat!(
            "SELECT c.relname::text, pg_get_viewdef(c.oid, true)
             FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind IN ('v', 'm') AND ",
            not_extension_member!("pg_class", "c.oid")
        ),
    ),
    (
        "triggers",
        "SELECT c.relname || '.' || t.tgname,
                pg_get_triggerdef(t.oid, true) || ' enabled=' || t.tgenabled::text
         FROM pg_trigger t
         JOIN pg_class c ON c.oid = t.tgrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND NOT t.tgisinternal",
    ),
    (
        "rules",
        "SELECT tablename || '.' || rulename, definition FROM pg_rules WHERE schemaname = 'public'",
    ),
    (
        "policies",
        "SELECT c.relname || '.' || p.polname,
                concat_ws(' ', p.polcmd::text, p.polpermissive, p.polroles::regrole[]::text,
                          pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid))
         FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public'",
    ),
    (
        "sequences",
        concat!(
            "SELECT c.relname::text,
                    concat_ws(' ', 'type=' || format_type(s.seqtypid, NULL),
                              'start=' || s.seqstart, 'increment=' || s.seqincrement,
                              'min=' || s.seqmin, 'max=' || s.seqmax, 'cache=' || s.seqcache,
                              'cycle=' || s.seqcycle,
                              'owned_by=' || (SELECT d.refobjid::regclass || '.' || a.attname
                                              FROM pg_depend d
                                              JOIN pg_attribute a ON a.attrelid = d.refobjid
                                                                 AND a.attnum = d.refobjsubid
                                              WHERE d.classid = 'pg_class'::regclass
                                                AND d.objid = c.oid AND d.deptype IN ('a', 'i')))
             FROM pg_sequence s
             JOIN pg_class c ON c.oid = s.seqrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND ",
            not_extension_member!("pg_class", "c.oid")
        ),
    ),
    (
        "types",
        concat!(
            "SELECT t.typname::text,
                    concat_ws(' ', 'kind=' || t.typtype::text,
                              'base=' || format_type(nullif(t.typbasetype, 0), t.typtypmod),
                              'labels=' || (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                                            FROM pg_enum e WHERE e.enumtypid = t.oid))
             FROM pg_type t
             JOIN pg_namespace n ON n.oid = t.typnamespace
             WHERE n.nspname = 'public' AND t.typrelid = 0 AND t.typcategory <> 'A' AND ",
            not_extension_member!("pg_type", "t.oid")
        ),
    ),
    (
        "privileges",
        concat!(
            "WITH acls AS (
                 SELECT 'relation ' || c.relname AS object,
                        coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::\"char\",
                                                      c.relowner)) AS acl
                 FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
                   AND ",
            not_extension_member!("pg_class", "c.oid"),
            "
                 UNION ALL
                 SELECT 'column ' || c.relname || '.' || a.attname, a.attacl
                 FROM pg_attribute a
                 JOIN pg_class c ON c.oid = a.attrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = 'public' AND a.attacl IS NOT NULL
                 UNION ALL
                 SELECT 'function ' || p.oid::regprocedure::text,
                        coalesce(p.proacl, acldefault('f', p.proowner))
                 FROM pg_proc p
                 JOIN pg_namespace n ON n.oid = p.pronamespace
                 WHERE n.nspname = 'public' AND ",
            not_extension_member!("pg_proc", "p.oid"),
            "
                 UNION ALL
                 SELECT 'schema ' || n.nspname, coalesce(n.nspacl, acldefault('n', n.nspowner))
                 FROM pg_namespace n
                 WHERE n.nspname = 'public'
             )
             SELECT object || ' to ' || CASE WHEN x.grantee = 0 THEN 'PUBLIC'
                                             ELSE pg_get_userbyid(x.grantee) END,
                    string_agg(x.privilege_type || CASE WHEN x.is_grantable THEN ' (grantable)' ELSE '' END
                               || ' by ' || pg_get_userbyid(x.grantor), ', ' ORDER BY x.privilege_type)
             FROM acls CROSS JOIN LATERAL aclexplode(acls.acl) x
             GROUP BY 1"
        ),
    ),
    (
        "default privileges",
        "SELECT pg_get_userbyid(d.defaclrole) || ' ' || d.defaclobjtype::text || ' in '
                || coalesce(d.defaclnamespace::regnamespace::text, 'every schema'),
                d.defaclacl::text
         FROM pg_default_acl d",
    ),
    (
        "comments",
        "SELECT o.type || ' ' || o.identity, d.description
         FROM pg_description d
         CROSS JOIN LATERAL pg_identify_object(d.classoid, d.objoid, d.objsubid) o
         WHERE (o.schema = 'public' OR (o.type = 'schema' AND o.identity = 'public'))
           AND NOT EXISTS (SELECT 1 FROM pg_depend e
                           WHERE e.classid = d.classoid AND e.objid = d.objoid AND e.deptype = 'e')",
    ),
    (
        "roles",
        "SELECT r.rolname::text,
                concat_ws(' ', CASE WHEN r.rolsuper THEN 'superuser' END,
                          CASE WHEN r.rolinherit THEN 'inherit' ELSE 'noinherit' END,
                          CASE WHEN r.rolcreaterole THEN 'createrole' END,
                          CASE WHEN r.rolcreatedb THEN 'createdb' END,
                          CASE WHEN r.rolcanlogin THEN 'login' ELSE 'nologin' END,
                          CASE WHEN r.rolreplication THEN 'replication' END,
                          CASE WHEN r.rolbypassrls THEN 'bypassrls' END,
                          'connection_limit=' || r.rolconnlimit)
         FROM pg_roles r
         WHERE r.rolname LIKE 'edge\\_mes\\_%'",
    ),
    (
        "role memberships",
        "SELECT pg_get_userbyid(m.member) || ' in ' || pg_get_userbyid(m.roleid),
                'admin_option=' || m.admin_option
         FROM pg_auth_members m
         WHERE pg_get_userbyid(m.roleid) LIKE 'edge\\_mes\\_%'
            OR pg_get_userbyid(m.member) LIKE 'edge\\_mes\\_%'",
    ),
];

/// Categories a migrated database must have rows in, so a broken query cannot make two schemas
/// look equal by returning nothing for both.
pub const NEVER_EMPTY: &[&str] = &[
    "extensions",
    "relations",
    "columns",
    "constraints",
    "indexes",
    "functions",
    "views",
    "sequences",
    "privileges",
    "comments",
    "roles",
];

/// The schema of one database: category → object → description.
#[derive(Debug, PartialEq, Eq)]
pub struct Schema(BTreeMap<&'static str, BTreeMap<String, String>>);

impl Schema {
    pub async fn read(pool: &PgPool) -> Schema {
        let mut categories = BTreeMap::new();
        for (category, sql) in CATEGORIES {
            let rows: Vec<(String, String)> = sqlx::query_as(sql)
                .fetch_all(pool)
                .await
                .unwrap_or_else(|e| panic!("catalog query for {category}: {e}"));
            let mut objects = BTreeMap::new();
            for (key, description) in rows {
                let earlier = objects.insert(key.clone(), description);
                assert!(earlier.is_none(), "{category}: {key} listed twice");
            }
            categories.insert(*category, objects);
        }
        Schema(categories)
    }

    /// Objects in `category`.
    pub fn objects(&self, category: &str) -> usize {
        self.0.get(category).map_or(0, BTreeMap::len)
    }

    /// What differs from `other`, one line per object: missing on one side, or described
    /// differently. `self_name` and `other_name` label the sides.
    pub fn differences(&self, self_name: &str, other: &Schema, other_name: &str) -> Vec<String> {
        let empty = BTreeMap::new();
        let mut out = Vec::new();
        for (category, _) in CATEGORIES {
            let ours = self.0.get(category).unwrap_or(&empty);
            let theirs = other.0.get(category).unwrap_or(&empty);
            for (key, description) in ours {
                match theirs.get(key) {
                    None => out.push(format!("{category} {key}: only in {self_name}")),
                    Some(d) if d != description => out.push(format!(
                        "{category} {key}:\n  {self_name}: {description}\n  {other_name}: {d}"
                    )),
                    Some(_) => {}
                }
            }
            for key in theirs.keys().filter(|k| !ours.contains_key(*k)) {
                out.push(format!("{category} {key}: only in {other_name}"));
            }
        }
        out
    }
}
