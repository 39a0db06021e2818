//! JWT keys from the identity provider's JWKS (`--jwt-jwks-file`): the token's `kid` selects the
//! one key that may verify it; encryption keys, keys for other algorithms, unknown `kid`s and a
//! token whose algorithm is not its key's are refused; the file reloads on change. Tokens and keys
//! are made by PyJWT (`pip install pyjwt cryptography`), another implementation than satgate's.

use std::path::Path;
use std::process::Command;

use satgate::auth::{Authenticator, Refusal};
use satgate::config::JwtKey;
use serde_json::Value;

/// Whether PyJWT runs here; without it the test is skipped on a developer's machine and fails
/// under `.ci/run` (`SATGATE_REQUIRE_TOOLS`).
fn pyjwt(test: &str) -> bool {
    let runs = Command::new("python3")
        .args(["-c", "import jwt, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    let why = "PyJWT is not installed; `python3 -m pip install pyjwt cryptography` to run the JWKS tests";
    crate::support::tools::available(test, runs, "SATGATE_REQUIRE_TOOLS", why)
}

/// Makes keys and tokens in `dir`: `jwks.json` (RSA `rsa-1`, EC P-256 `ec-1`, an encryption key
/// `enc-1`, an RS384 key `rs384-1`), `next.json` (only RSA `rsa-2`) and `tokens.json` by name.
const MAKE: &str = r#"
import base64, hashlib, hmac, json, sys, time
import jwt
from jwt.algorithms import RSAAlgorithm, ECAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa, ec
from cryptography.hazmat.primitives import serialization
out = sys.argv[1]
rsa1, rsa2, enc, rs384, stranger = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(5))
ec1 = ec.generate_private_key(ec.SECP256R1())
def jwk(key, cls, **members):
    d = json.loads(cls.to_jwk(key.public_key()))
    d.update(members)
    return d
keys = [jwk(rsa1, RSAAlgorithm, kid="rsa-1", use="sig", alg="RS256"),
        jwk(ec1, ECAlgorithm, kid="ec-1"),
        jwk(enc, RSAAlgorithm, kid="enc-1", use="enc"),
        jwk(rs384, RSAAlgorithm, kid="rs384-1", alg="RS384")]
json.dump({"keys": keys}, open(f"{out}/jwks.json", "w"))
json.dump({"keys": [jwk(rsa2, RSAAlgorithm, kid="rsa-2", use="sig")]}, open(f"{out}/next.json", "w"))
claims = {"sub": "90-B3-D5-1F-30-01-00-00", "role": "IS", "party": "SUPA", "exp": int(time.time()) + 600}
def tok(key, alg, kid):
    headers = {} if kid is None else {"kid": kid}
    return jwt.encode(claims, key, algorithm=alg, headers=headers)
def b64(b): return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
# Algorithm confusion: HS256 keyed with the RSA key's public PEM, naming the RSA key.
pem = rsa1.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
body = b64(json.dumps(claims).encode())
confused = f"{head}.{body}." + b64(hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest())
json.dump({
    "rsa": tok(rsa1, "RS256", "rsa-1"),
    "ec": tok(ec1, "ES256", "ec-1"),
    "unknown kid": tok(rsa1, "RS256", "rsa-9"),
    "no kid": tok(rsa1, "RS256", None),
    "encryption key": tok(enc, "RS256", "enc-1"),
    "RS384 key": tok(rs384, "RS384", "rs384-1"),
    "RS384 key as RS256": tok(rs384, "RS256", "rs384-1"),
    "ES256 naming the RSA key": tok(ec1, "ES256", "rsa-1"),
    "RS256 naming the EC key": tok(rsa1, "RS256", "ec-1"),
    "another key naming rsa-1": tok(stranger, "RS256", "rsa-1"),
    "HS256 keyed with the public key": confused,
    "next": tok(rsa2, "RS256", "rsa-2"),
}, open(f"{out}/tokens.json", "w"))
"#;

fn make(dir: &Path) -> Value {
    let o = Command::new("python3").args(["-c", MAKE]).arg(dir).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_str(&std::fs::read_to_string(dir.join("tokens.json")).unwrap()).unwrap()
}

fn check(auth: &Authenticator, token: &Value) -> Result<String, Refusal> {
    let header = format!("Bearer {}", token.as_str().unwrap());
    auth.principal(Some(header.as_bytes())).map(|p| p.party.to_string())
}

#[test]
fn a_jwks_verifies_each_token_with_the_key_its_kid_names_and_nothing_else() {
    if !pyjwt("jwks::a_jwks_verifies_each_token_with_the_key_its_kid_names_and_nothing_else") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tokens = make(dir.path());
    let file = dir.path().join("issuer.jwks");
    std::fs::copy(dir.path().join("jwks.json"), &file).unwrap();
    let auth = Authenticator::new(JwtKey::JwksFile(file.clone()), None, None).unwrap();
    assert_eq!(auth.key_count(), 2, "rsa-1 and ec-1; not the encryption or RS384 keys");
    for good in ["rsa", "ec"] {
        assert_eq!(check(&auth, &tokens[good]), Ok("SUPA".into()), "{good}");
    }
    for bad in [
        "unknown kid",
        "no kid",
        "encryption key",
        "RS384 key",
        "RS384 key as RS256",
        "ES256 naming the RSA key",
        "RS256 naming the EC key",
        "another key naming rsa-1",
        "HS256 keyed with the public key",
        "next",
    ] {
        assert!(
            matches!(check(&auth, &tokens[bad]), Err(Refusal::Unauthenticated(_))),
            "{bad}: accepted"
        );
    }

    // The provider rotates: the new set is picked up once it has settled (two polls).
    std::fs::copy(dir.path().join("next.json"), &file).unwrap();
    assert!(auth.reload_if_changed().is_none());
    assert_eq!(
        auth.reload_if_changed().map(|r| r.map_err(|e| e.to_string())),
        Some(Ok(1))
    );
    assert_eq!(check(&auth, &tokens["next"]), Ok("SUPA".into()));
    assert!(check(&auth, &tokens["rsa"]).is_err(), "a key no longer in the set");
}

#[test]
fn an_unusable_jwks_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let load = |doc: &str| {
        let file = dir.path().join("k.jwks");
        std::fs::write(&file, doc).unwrap();
        Authenticator::new(JwtKey::JwksFile(file), None, None)
            .err()
            .map(|e| e.to_string())
    };
    // A P-256 public key (RFC 7517 appendix A.1).
    let ec = r#""kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM""#;
    for (doc, why) in [
        ("not json".to_owned(), "not a JWKS document"),
        (r#"{"keys": []}"#.to_owned(), "no RS256 or ES256 signing key"),
        (format!(r#"{{"keys": [{{{ec}}}]}}"#), "no kid"),
        (
            format!(r#"{{"keys": [{{{ec},"kid":"a"}},{{{ec},"kid":"a"}}]}}"#),
            "given twice",
        ),
        (format!(r#"{{"keys": [{{{ec},"kid":"a","d":"x"}}]}}"#), "private"),
        (
            format!(r#"{{"keys": [{{{ec},"kid":"a","alg":"RS256"}}]}}"#),
            "does not match",
        ),
        (
            format!(r#"{{"keys": [{{{ec},"kid":"a","use":"enc"}}]}}"#),
            "no RS256 or ES256 signing key",
        ),
        (
            r#"{"keys": [{"kty":"oct","k":"c2VjcmV0","kid":"h"}]}"#.to_owned(),
            "private or secret",
        ),
    ] {
        let err = load(&doc).unwrap_or_else(|| panic!("{doc}: accepted"));
        assert!(err.contains(why), "{doc}: {err}");
    }
    assert_eq!(
        load(&format!(
            r#"{{"keys": [{{{ec},"kid":"a","use":"sig","alg":"ES256"}}]}}"#
        )),
        None
    );
}

#[test]
fn the_jwks_file_is_one_of_the_three_key_settings() {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        serve: satgate::config::ServeArgs,
    }
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, "{}").unwrap();
    let resolve = |extra: &[&str]| {
        let mut argv = vec![
            "satgate",
            "--upstream=http://127.0.0.1:1",
            "--inventory=tests/data/inventory.json",
        ];
        argv.extend(extra);
        satgate::config::ServeConfig::resolve(&Cli::parse_from(argv).serve).map(|c| c.jwt_key)
    };
    let flag = format!("--jwt-jwks-file={}", jwks.display());
    assert_eq!(resolve(&[&flag]).unwrap(), JwtKey::JwksFile(jwks.clone()));
    let both = resolve(&[&flag, "--jwt-hs256-secret-file=Cargo.toml"])
        .unwrap_err()
        .to_string();
    assert!(both.starts_with("jwt: give only one"), "{both}");
    let none = resolve(&[]).unwrap_err().to_string();
    assert!(none.contains("--jwt-jwks-file"), "{none}");
}
