//! How a provider is written in the agent's config and on a command line.

use hooks::{DEFAULT_GENERIC_HEADER, ParseProviderError, Provider};

#[derive(Debug, serde::Deserialize)]
struct AppHook {
    provider: Provider,
}

fn from_yaml(text: &str) -> Result<Provider, String> {
    serde_yaml_ng::from_str::<AppHook>(text).map(|hook| hook.provider).map_err(|e| e.to_string())
}

#[test]
fn names_parse() {
    assert_eq!("github".parse(), Ok(Provider::GitHub));
    assert_eq!("GitLab".parse(), Ok(Provider::GitLab));
    assert_eq!("gitea".parse(), Ok(Provider::Gitea));
    assert_eq!("forgejo".parse(), Ok(Provider::Gitea));
    assert_eq!("generic".parse(), Ok(Provider::Generic { header: DEFAULT_GENERIC_HEADER.into() }));
    assert_eq!("generic:X-Hook-Signature".parse(), Ok(Provider::Generic { header: "X-Hook-Signature".into() }));
}

#[test]
fn unknown_names_say_what_is_valid() {
    let error = "bitbucket".parse::<Provider>().unwrap_err();
    assert_eq!(error, ParseProviderError::Unknown("bitbucket".into()));
    assert!(error.to_string().contains("hint: use `github`"), "{error}");
    assert!(matches!("generic:X Sig".parse::<Provider>(), Err(ParseProviderError::BadHeader(_))));
    assert!(matches!("generic:".parse::<Provider>(), Err(ParseProviderError::BadHeader(_))));
}

#[test]
fn display_reads_back() {
    for provider in [Provider::GitHub, Provider::GitLab, Provider::Gitea, Provider::Generic { header: "X-Sig".into() }]
    {
        assert_eq!(provider.to_string().parse(), Ok(provider));
    }
}

#[test]
fn config_spellings_deserialize() {
    assert_eq!(from_yaml("provider: github"), Ok(Provider::GitHub));
    assert_eq!(from_yaml("provider: forgejo"), Ok(Provider::Gitea));
    assert_eq!(from_yaml("provider: generic"), Ok(Provider::Generic { header: "X-Signature".into() }));
    assert_eq!(
        from_yaml("provider: { generic: { header: X-Deploy-Signature } }"),
        Ok(Provider::Generic { header: "X-Deploy-Signature".into() })
    );
    assert_eq!(
        from_yaml("provider:\n  generic:\n    header: X-Deploy-Signature\n"),
        Ok(Provider::Generic { header: "X-Deploy-Signature".into() })
    );
}

#[test]
fn bad_config_is_explained() {
    let typo = from_yaml("provider: githbu").unwrap_err();
    assert!(typo.contains("unknown webhook provider `githbu`"), "{typo}");
    let extra = from_yaml("provider: { generic: { header: X-Sig, algo: sha1 } }").unwrap_err();
    assert!(extra.contains("algo"), "{extra}");
    let bad_header = from_yaml("provider: { generic: { header: 'X Sig' } }").unwrap_err();
    assert!(bad_header.contains("not a valid HTTP header name"), "{bad_header}");
    let other_key = from_yaml("provider: { github: {} }").unwrap_err();
    assert!(other_key.contains("generic"), "{other_key}");
}

#[test]
fn serializes_to_the_config_spelling() {
    assert_eq!(serde_json::to_value(Provider::Gitea).unwrap(), serde_json::json!("gitea"));
    assert_eq!(
        serde_json::to_value(Provider::Generic { header: "X-Sig".into() }).unwrap(),
        serde_json::json!({"generic": {"header": "X-Sig"}})
    );
}
