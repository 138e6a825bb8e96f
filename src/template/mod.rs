//! Key-name templates for shared keys (`shared_keys.jwt_key_template`): Go `text/template`
//! syntax with the Sprig function set, rendering names such as
//! `spire-{{ .TrustDomain | replace "." "-" }}-{{ .KeyID }}`.
//!
//! A small engine of our own rather than a generic crate: every function is resolved when
//! the template is parsed, so an unknown function, one of Sprig's non-deterministic
//! functions (`now`, `randAlpha`, `uuidv4`, `env`, ...), a wrong argument count, a mistyped
//! literal argument, an undefined variable or an unknown `.Field` is a configuration error,
//! never a surprise at key-rotation time. Rendering follows Go's evaluation rules and
//! Sprig's semantics (argument order with the piped value last, byte-based `trunc`/`substr`,
//! xstrings casing, Go `fmt` printing) so names match the Go plugin's. Rendering is bounded
//! in steps (functions are charged by the size of what they read and return), memory and
//! nesting depth (`exec.rs`), so no template runs away, and it never panics.
//!
//! Supported syntax: text and `{{ }}` actions, trim markers `{{-`/`-}}`, comments
//! `{{/* */}}`, pipelines with `|`, function calls, string (interpreted and raw), number,
//! character, boolean and `nil` constants, `.`, `.Field`, `$`, `$var := / =`, parenthesized
//! pipelines with field access, `if`/`else if`/`else`, `with`/`else with`, `range` (with
//! `$i, $e :=`, `{{else}}`, `break`, `continue`). Not supported: `define`/`template`/`block`.

mod error;
mod exec;
mod lex;
mod literal;
mod parse;
mod sprig;
mod strcase;
mod unicode;
mod value;

use std::fmt;
use std::rc::Rc;

pub(crate) use error::TemplateError;
use value::{Data, Value};

/// Longest accepted template source.
const MAX_SOURCE: usize = 64 * 1024;

/// A parsed, validated key-name template. Cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct KeyNameTemplate {
    source: String,
    nodes: Vec<parse::Node>,
}

impl fmt::Debug for KeyNameTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyNameTemplate")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The data a key-name template sees: `.TrustDomain` (as configured), `.ServerID`, `.KeyID`.
pub struct TemplateContext<'a> {
    pub trust_domain: &'a str,
    pub server_id: &'a str,
    pub key_id: &'a str,
}

impl KeyNameTemplate {
    /// Parses and validates a template. All syntax errors, unknown functions and
    /// non-deterministic functions are reported here.
    pub fn parse(src: &str) -> Result<KeyNameTemplate, TemplateError> {
        if src.len() > MAX_SOURCE {
            return Err(TemplateError::whole(format!(
                "template is {} bytes long; the limit is {MAX_SOURCE}",
                src.len()
            )));
        }
        let nodes = parse::parse(src)?;
        Ok(KeyNameTemplate {
            source: src.to_string(),
            nodes,
        })
    }

    /// Renders the template for one key. Errors are execution errors such as a function
    /// failing (`fail`, division by zero, an out-of-range `index`) or a value of the wrong
    /// type reaching a function.
    pub fn render(&self, ctx: &TemplateContext) -> Result<String, TemplateError> {
        let root = Value::Data(Rc::new(Data {
            trust_domain: ctx.trust_domain.to_string(),
            key_id: ctx.key_id.to_string(),
            server_id: ctx.server_id.to_string(),
        }));
        exec::execute(&self.source, &self.nodes, root)
    }

    /// The template text as configured.
    pub fn source(&self) -> &str {
        &self.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: TemplateContext<'static> = TemplateContext {
        trust_domain: "example.com",
        server_id: "srv-1",
        key_id: "JWT-Signer-A",
    };

    fn render(src: &str) -> String {
        let t = KeyNameTemplate::parse(src).unwrap_or_else(|e| panic!("parse {src:?}: {e}"));
        t.render(&CTX)
            .unwrap_or_else(|e| panic!("render {src:?}: {e}"))
    }

    fn parse_err(src: &str) -> String {
        match KeyNameTemplate::parse(src) {
            Ok(_) => panic!("{src:?} parsed"),
            Err(e) => e.to_string(),
        }
    }

    fn render_err(src: &str) -> String {
        let t = KeyNameTemplate::parse(src).unwrap_or_else(|e| panic!("parse {src:?}: {e}"));
        match t.render(&CTX) {
            Ok(out) => panic!("{src:?} rendered {out:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn seed_example_renders_the_documented_name() {
        let t =
            KeyNameTemplate::parse(r#"spire-{{ .TrustDomain | replace "." "-" }}-{{ .KeyID }}"#)
                .unwrap();
        assert_eq!(t.render(&CTX).unwrap(), "spire-example-com-JWT-Signer-A");
        assert_eq!(
            t.source(),
            r#"spire-{{ .TrustDomain | replace "." "-" }}-{{ .KeyID }}"#
        );
    }

    #[test]
    fn upstream_pr_example_keeps_the_configured_trust_domain() {
        let t = KeyNameTemplate::parse("spire-key-{{ .TrustDomain }}-{{ .KeyID }}").unwrap();
        let ctx = TemplateContext {
            trust_domain: "test.example.org",
            server_id: "",
            key_id: "JWT-Signer-spireKeyID",
        };
        assert_eq!(
            t.render(&ctx).unwrap(),
            "spire-key-test.example.org-JWT-Signer-spireKeyID"
        );
        assert_eq!(
            render("{{ .ServerID }}/{{ $.KeyID }}"),
            "srv-1/JWT-Signer-A"
        );
    }

    #[test]
    fn sprig_documented_examples() {
        let cases: &[(&str, &str)] = &[
            // Sprig string functions.
            (r#"{{ trim "   hello    " }}"#, "hello"),
            (r#"{{ trimAll "$" "$5.00" }}"#, "5.00"),
            (r#"{{ trimSuffix "-" "hello-" }}"#, "hello"),
            (r#"{{ trimPrefix "-" "-hello" }}"#, "hello"),
            (r#"{{ upper "hello" }}"#, "HELLO"),
            (r#"{{ lower "HELLO" }}"#, "hello"),
            (r#"{{ title "hello world" }}"#, "Hello World"),
            (r#"{{ untitle "Hello World" }}"#, "hello world"),
            (r#"{{ repeat 3 "hello" }}"#, "hellohellohello"),
            (r#"{{ substr 0 5 "hello world" }}"#, "hello"),
            (r#"{{ nospace "hello w o r l d" }}"#, "helloworld"),
            (r#"{{ trunc 5 "hello world" }}"#, "hello"),
            (r#"{{ trunc -5 "hello world" }}"#, "world"),
            (r#"{{ abbrev 5 "hello world" }}"#, "he..."),
            (r#"{{ abbrevboth 5 10 "1234 5678 9123" }}"#, "...5678..."),
            (r#"{{ initials "First Try" }}"#, "FT"),
            (r#"{{ wrapWith 5 "\t" "Hello World" }}"#, "Hello\tWorld"),
            (r#"{{ wrap 5 "Hello World" }}"#, "Hello\nWorld"),
            (r#"{{ contains "cat" "catch" }}"#, "true"),
            (r#"{{ hasPrefix "cat" "catch" }}"#, "true"),
            (r#"{{ hasSuffix "cat" "catch" }}"#, "false"),
            (r#"{{ quote "a" "b" }}"#, r#""a" "b""#),
            (r#"{{ squote "a" 1 }}"#, "'a' '1'"),
            (
                r#"{{ cat "hello" "beautiful" "world" }}"#,
                "hello beautiful world",
            ),
            (r#"{{ indent 4 "a\nb" }}"#, "    a\n    b"),
            (r#"{{ nindent 2 "a" }}"#, "\n  a"),
            (
                r#"{{ "I Am Henry VIII" | replace " " "-" }}"#,
                "I-Am-Henry-VIII",
            ),
            (
                r#"{{ len "fish" | plural "one anchovy" "many anchovies" }}"#,
                "many anchovies",
            ),
            (
                r#"{{ 1 | plural "one anchovy" "many anchovies" }}"#,
                "one anchovy",
            ),
            (r#"{{ snakecase "FirstName" }}"#, "first_name"),
            (r#"{{ camelcase "http_server" }}"#, "HttpServer"),
            (r#"{{ kebabcase "FirstName" }}"#, "first-name"),
            (r#"{{ swapcase "This Is A.Test" }}"#, "tHIS iS a.tEST"),
            (
                r#"{{ regexMatch "^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{2,}$" "test@acme.com" }}"#,
                "true",
            ),
            (
                r#"{{ regexFindAll "[2,4,6,8]" "123456789" -1 }}"#,
                "[2 4 6 8]",
            ),
            (r#"{{ regexFindAll "[2,4,6,8]" "123456789" 2 }}"#, "[2 4]"),
            (r#"{{ regexFind "[a-zA-Z][1-9]" "abcd1234" }}"#, "d1"),
            (
                r#"{{ regexReplaceAll "a(x*)b" "-ab-axxb-" "${1}W" }}"#,
                "-W-xxW-",
            ),
            (
                r#"{{ regexReplaceAllLiteral "a(x*)b" "-ab-axxb-" "${1}" }}"#,
                "-${1}-${1}-",
            ),
            (r#"{{ regexSplit "z+" "pizza" -1 }}"#, "[pi a]"),
            (r#"{{ regexSplit "z+" "pizza" 1 }}"#, "[pizza]"),
            (r#"{{ regexQuoteMeta "1.2.3" }}"#, r"1\.2\.3"),
            // Sprig digests and encodings.
            (
                r#"{{ sha1sum "Hello world!" }}"#,
                "d3486ae9136e7856bc42212385ea797094475802",
            ),
            (
                r#"{{ sha256sum "Hello world!" }}"#,
                "c0535e4be2b79ffd93291305436bf889314e4a3faec05ecffcbb7df31ad9e51a",
            ),
            (
                r#"{{ sha512sum "abc" | trunc 32 }}"#,
                "ddaf35a193617abacc417349ae204131",
            ),
            (r#"{{ adler32sum "Hello world!" }}"#, "487130206"),
            (r#"{{ b64enc "Hello" }}"#, "SGVsbG8="),
            (r#"{{ b64dec "SGVsbG8=" }}"#, "Hello"),
            (
                r#"{{ b64dec "SGVsbG8" }}"#,
                "illegal base64 data at input byte 4",
            ),
            (r#"{{ b32enc "Hello" }}"#, "JBSWY3DP"),
            (r#"{{ b32dec "JBSWY3DP" }}"#, "Hello"),
            // Sprig string lists and lists.
            (r#"{{ list "hello" "world" | join "_" }}"#, "hello_world"),
            (r#"{{ join "+" (list 1 2 3) }}"#, "1+2+3"),
            (r#"{{ splitList "$" "foo$bar$baz" }}"#, "[foo bar baz]"),
            (
                r#"{{ $a := split "$" "foo$bar$baz" }}{{ $a._0 }}{{ $a._2 }}"#,
                "foobaz",
            ),
            (r#"{{ (splitn "$" 2 "foo$bar$baz")._1 }}"#, "bar$baz"),
            (r#"{{ list 3 1 2 | sortAlpha }}"#, "[1 2 3]"),
            (r#"{{ first (list 1 2 3) }}"#, "1"),
            (r#"{{ rest (list 1 2 3) }}"#, "[2 3]"),
            (r#"{{ last (list 1 2 3) }}"#, "3"),
            (r#"{{ initial (list 1 2 3) }}"#, "[1 2]"),
            (r#"{{ append (list 1 2 3) 4 }}"#, "[1 2 3 4]"),
            (r#"{{ prepend (list 1 2 3) 0 }}"#, "[0 1 2 3]"),
            (
                r#"{{ concat (list 1 2 3) (list 4 5) (list 6) }}"#,
                "[1 2 3 4 5 6]",
            ),
            (r#"{{ reverse (list 1 2 3) }}"#, "[3 2 1]"),
            (r#"{{ uniq (list 1 1 1 2) }}"#, "[1 2]"),
            (r#"{{ without (list 1 2 3 4) 1 3 }}"#, "[2 4]"),
            (r#"{{ has 4 (list 1 2 3 4) }}"#, "true"),
            (r#"{{ compact (list 1 0 "" "hello") }}"#, "[1 hello]"),
            (r#"{{ slice (list 1 2 3 4 5) 1 3 }}"#, "[2 3]"),
            (r#"{{ slice (list 1 2 3 4 5) 3 }}"#, "[4 5]"),
            (r#"{{ chunk 2 (list 1 2 3 4 5) }}"#, "[[1 2] [3 4] [5]]"),
            (r#"{{ toStrings (list 1 "a" nil) }}"#, "[1 a]"),
            // Sprig integer lists and math.
            (r#"{{ until 5 }}"#, "[0 1 2 3 4]"),
            (r#"{{ untilStep 3 6 2 }}"#, "[3 5]"),
            (r#"{{ seq 5 }}"#, "1 2 3 4 5"),
            (r#"{{ seq -3 }}"#, "1 0 -1 -2 -3"),
            (r#"{{ seq 0 2 }}"#, "0 1 2"),
            (r#"{{ seq 2 -2 }}"#, "2 1 0 -1 -2"),
            (r#"{{ seq 0 2 10 }}"#, "0 2 4 6 8 10"),
            (r#"{{ seq 0 -2 -5 }}"#, "0 -2 -4"),
            (r#"{{ seq 1 -1 5 }}|{{ untilStep 0 10 -1 }}"#, "|[]"),
            (r#"{{ int 1e21 }}"#, "-9223372036854775808"),
            (r#"{{ add 1 2 3 }}"#, "6"),
            (r#"{{ add1 1 }}"#, "2"),
            (r#"{{ sub 3 2 }}"#, "1"),
            (r#"{{ div 7 2 }}"#, "3"),
            (r#"{{ mod 7 3 }}"#, "1"),
            (r#"{{ mul 2 3 4 }}"#, "24"),
            (r#"{{ max 1 5 3 }}"#, "5"),
            (r#"{{ min 4 2 3 }}"#, "2"),
            (r#"{{ add "3" 4.9 true }}"#, "8"),
            (
                r#"{{ floor 1.5 }} {{ ceil 1.5 }} {{ round 3.14159 2 }}"#,
                "1 2 3.14",
            ),
            (r#"{{ maxf 1 2.5 }} {{ minf 1 2.5 }}"#, "2.5 1"),
            // Sprig defaults, conversions, reflection, paths.
            (r#"{{ "" | default "foo" }}"#, "foo"),
            (r#"{{ "bar" | default "foo" }}"#, "bar"),
            (
                r#"{{ empty "" }} {{ empty 0 }} {{ empty "x" }}"#,
                "true true false",
            ),
            (r#"{{ coalesce 0 "" "x" "y" }}"#, "x"),
            (r#"{{ all 1 "a" }} {{ any 0 "" }}"#, "true false"),
            (r#"{{ true | ternary "foo" "bar" }}"#, "foo"),
            (r#"{{ atoi "42" }} {{ atoi "4x" }}"#, "42 0"),
            (
                r#"{{ int "0x1F" }} {{ int64 "10.0" }} {{ float64 "1.5" }}"#,
                "31 10 1.5",
            ),
            (r#"{{ toDecimal "0777" }}"#, "511"),
            (r#"{{ toString 12 }}"#, "12"),
            (
                r#"{{ typeOf 1 }} {{ kindOf (list) }} {{ kindIs "string" "x" }}"#,
                "int slice true",
            ),
            (r#"{{ deepEqual (list 1 2) (list 1 2) }}"#, "true"),
            (
                r#"{{ base "foo/bar/baz" }} {{ dir "foo/bar/baz" }}"#,
                "baz foo/bar",
            ),
            (
                r#"{{ clean "foo/bar/../baz" }} {{ ext "foo.bar" }} {{ isAbs "/x" }}"#,
                "foo/baz .bar true",
            ),
            // Sprig dictionaries.
            (
                r#"{{ $d := dict "name1" "value1" "name2" "value2" }}{{ get $d "name1" }}"#,
                "value1",
            ),
            (
                r#"{{ hasKey (dict "a" 1) "a" }} {{ get (dict) "x" }}|"#,
                "true |",
            ),
            (r#"{{ keys (dict "b" 1 "a" 2) | sortAlpha }}"#, "[a b]"),
            (
                r#"{{ pluck "a" (dict "a" 1) (dict "a" 2 "b" 3) }}"#,
                "[1 2]",
            ),
            (
                r#"{{ pick (dict "a" 1 "b" 2) "a" }} {{ omit (dict "a" 1 "b" 2) "a" }}"#,
                "map[a:1] map[b:2]",
            ),
            (
                r#"{{ dig "a" "b" "none" (dict "a" (dict "b" "found")) }}"#,
                "found",
            ),
            (
                r#"{{ dig "a" "x" "none" (dict "a" (dict "b" "found")) }}"#,
                "none",
            ),
            (r#"{{ hello }}"#, "Hello!"),
        ];
        for (src, want) in cases {
            assert_eq!(render(src), *want, "template {src}");
        }
    }

    #[test]
    fn go_template_features() {
        let cases: &[(&str, &str)] = &[
            // if / else if / else, comparisons, boolean functions.
            (
                r#"{{ if eq .KeyID "JWT-Signer-A" }}a{{ else if eq .KeyID "JWT-Signer-B" }}b{{ else }}c{{ end }}"#,
                "a",
            ),
            (
                r#"{{ if ne .KeyID "JWT-Signer-A" }}a{{ else if hasSuffix "A" .KeyID }}b{{ else }}c{{ end }}"#,
                "b",
            ),
            (
                r#"{{ if and (lt 1 2) (le 2 2) (gt 3 2) (ge 3 3) }}yes{{ end }}"#,
                "yes",
            ),
            (r#"{{ if or false 0 "" }}x{{ else }}none{{ end }}"#, "none"),
            (
                r#"{{ or "" "first" "second" }} {{ and 1 0 2 }} {{ not "" }}"#,
                "first 0 true",
            ),
            // `and`/`or` do not evaluate arguments they do not need.
            (
                r#"{{ and false (fail "boom") }} {{ or true (fail "boom") }}"#,
                "false true",
            ),
            (
                r#"{{ eq 2 1 2 3 }} {{ eq "a" "b" }} {{ lt "a" "b" }}"#,
                "true false true",
            ),
            // with, else with.
            (r#"{{ with .ServerID }}[{{ . }}]{{ end }}"#, "[srv-1]"),
            (
                r#"{{ with "" }}x{{ else with .KeyID }}{{ . }}{{ end }}"#,
                "JWT-Signer-A",
            ),
            (
                r#"{{ with "" }}x{{ else }}{{ .KeyID }}{{ end }}"#,
                "JWT-Signer-A",
            ),
            // range, variables, break/continue.
            (
                r#"{{ range $i, $e := list "a" "b" "c" }}{{ $i }}={{ $e }};{{ end }}"#,
                "0=a;1=b;2=c;",
            ),
            (r#"{{ range list "a" "b" }}<{{ . }}>{{ end }}"#, "<a><b>"),
            (
                r#"{{ range $e := until 10 }}{{ if eq $e 3 }}{{ break }}{{ end }}{{ $e }}{{ end }}"#,
                "012",
            ),
            (
                r#"{{ range until 4 }}{{ if eq . 1 }}{{ continue }}{{ end }}{{ . }}{{ end }}"#,
                "023",
            ),
            (r#"{{ range list }}x{{ else }}empty{{ end }}"#, "empty"),
            (
                r#"{{ range $k, $v := dict "b" 2 "a" 1 }}{{ $k }}{{ $v }}{{ end }}"#,
                "a1b2",
            ),
            (r#"{{ range 3 }}{{ . }}{{ end }}"#, "012"),
            (
                r#"{{ $x := "a" }}{{ range list 1 2 }}{{ $x = print $x . }}{{ end }}{{ $x }}"#,
                "a12",
            ),
            (r#"{{ $n := len .KeyID }}{{ $n }}"#, "12"),
            (
                r#"{{ $td := .TrustDomain }}{{ with .KeyID }}{{ $td }}/{{ . }}/{{ $.ServerID }}{{ end }}"#,
                "example.com/JWT-Signer-A/srv-1",
            ),
            // Trim markers and comments.
            ("a  {{- /* comment */ -}}  b", "ab"),
            ("a {{- .KeyID -}} \n b", "aJWT-Signer-Ab"),
            ("{{/* only a comment */}}x", "x"),
            ("{{- 3 -}}", "3"),
            ("{{ -3 }}", "-3"),
            // Constants, parentheses, printf, index, len.
            (
                r#"{{ printf "%s-%s" .TrustDomain .KeyID }}"#,
                "example.com-JWT-Signer-A",
            ),
            (
                r#"{{ printf "%d|%5.2f|%q|%x|%v" 42 3.14159 "q" 255 (list 1 "a") }}"#,
                "42| 3.14|\"q\"|ff|[1 a]",
            ),
            (r#"{{ printf "%s" 5 }}"#, "%!s(int=5)"),
            (r#"{{ print "a" 1 2 "b" }}"#, "a1 2b"),
            (r#"{{ println "a" "b" }}"#, "a b\n"),
            (r#"{{ (printf "%s-%s" "a" "b") | upper }}"#, "A-B"),
            (
                r#"{{ index (list "a" "b") 1 }} {{ index "abc" 0 }} {{ index (dict "k" "v") "k" }}"#,
                "b 97 v",
            ),
            (r#"{{ len (list 1 2) }} {{ len "héllo" }}"#, "2 6"),
            (r#"{{ `raw\n` }}"#, "raw\\n"),
            (r#"{{ "tab\tquote\"" }}"#, "tab\tquote\""),
            (
                r#"{{ 'a' }} {{ 0x10 }} {{ 1_000 }} {{ 1e3 }} {{ 3.0 }} {{ 2.5 }}"#,
                "97 16 1000 1000 3 2.5",
            ),
            (r#"{{ true }} {{ print nil }}"#, "true <nil>"),
            (r#"{{ first (list) }}"#, "<no value>"),
            (r#"{{ (dict).missing.deeper }}"#, "<no value>"),
            // Go accepts a trailing pipe.
            (r#"{{ .KeyID | }}"#, "JWT-Signer-A"),
            (
                r#"{{ html "<a&b>" }} {{ urlquery "a b&c" }} {{ js "it's" }}"#,
                "&lt;a&amp;b&gt; a+b%26c it\\'s",
            ),
            (r#"{{ . }}"#, "{example.com JWT-Signer-A srv-1}"),
            // Nested pipelines with the piped value as the last argument.
            (
                r#"{{ .TrustDomain | replace "." "-" | upper | printf "%s-%s" "spire" }}"#,
                "spire-EXAMPLE-COM",
            ),
            (
                r#"{{ .KeyID | lower | trimPrefix "jwt-" | trunc 6 }}"#,
                "signer",
            ),
        ];
        for (src, want) in cases {
            assert_eq!(render(src), *want, "template {src}");
        }
    }

    #[test]
    fn regex_replacement_follows_go_empty_match_rules() {
        assert_eq!(render(r#"{{ regexReplaceAll "a*" "baaac" "X" }}"#), "XbXcX");
        assert_eq!(render(r#"{{ regexFindAll "a*" "baaac" -1 }}"#), "[ aaa ]");
        assert_eq!(
            render(r#"{{ regexReplaceAll "(?P<x>[0-9]+)" "a1b22" "<$x>" }}"#),
            "a<1>b<22>"
        );
        assert_eq!(render(r#"{{ regexReplaceAll "[0-9]" "a1" "$$" }}"#), "a$");
        assert_eq!(render(r#"{{ regexSplit "" "abc" -1 }}"#), "[a b c]");
        assert_eq!(render(r#"{{ regexMatch "(" "x" }}"#), "false");
    }

    #[test]
    fn parse_errors_are_reported_with_position() {
        let cases: &[(&str, &str)] = &[
            ("{{ .KeyID", "unclosed action (line 1, column 1)"),
            (
                "ab\n{{ foo }}",
                "function \"foo\" not defined (line 2, column 4)",
            ),
            (
                "{{ now }}",
                "function \"now\" is not allowed: key names must be deterministic",
            ),
            (
                "{{ randAlphaNum 8 }}",
                "function \"randAlphaNum\" is not allowed",
            ),
            (
                "{{ uuidv4 }}",
                "is not allowed: key names must be deterministic",
            ),
            ("{{ env \"HOME\" }}", "function \"env\" is not allowed"),
            (
                "{{ .KeyID | date \"2006\" }}",
                "function \"date\" is not allowed",
            ),
            ("{{ toJson . }}", "function \"toJson\" is not supported"),
            (
                "{{ .KeyID | \"x\" }}",
                "non executable command in pipeline stage 2",
            ),
            (
                "{{ .KeyID | .TrustDomain }}",
                "non-function command in pipeline stage 2",
            ),
            ("{{ | upper }}", "unexpected \"|\""),
            ("{{ }}", "missing value for command"),
            (
                "{{ .KeyID .KeyID }}",
                "can't give argument to non-function .KeyID",
            ),
            ("{{ nil }}", "nil is not a command"),
            ("{{ end }}", "unexpected {{end}}"),
            ("{{ else }}", "unexpected {{else}}"),
            ("{{ if .KeyID }}x", "unexpected EOF in {{if}}"),
            ("{{ if }}x{{ end }}", "missing value for if"),
            (
                "{{ range list 1 }}{{ else if true }}{{ end }}",
                "unexpected {{else if}} in {{range}}",
            ),
            ("{{ break }}", "{{break}} outside {{range}}"),
            ("{{ .Foo }}", "can't evaluate field Foo"),
            (
                "{{ $.KeyID.Bar }}",
                "can't evaluate field Bar in type string",
            ),
            ("{{ $x }}", "undefined variable \"$x\""),
            ("{{ $x = 1 }}", "undefined variable \"$x\""),
            (
                "{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}",
                "undefined variable \"$y\"",
            ),
            (
                "{{ upper }}",
                "wrong number of args for upper: want 1 got 0",
            ),
            (
                "{{ .KeyID | replace \"a\" }}",
                "wrong number of args for replace: want 3 got 2",
            ),
            ("{{ upper 5 }}", "expected string; found 5"),
            ("{{ trunc \"a\" .KeyID }}", "expected integer; found \"a\""),
            ("{{ trunc 1.5 .KeyID }}", "expected integer; found 1.5"),
            ("{{ upper nil }}", "cannot assign nil to string"),
            (
                "{{ template \"x\" }}",
                "not supported in key name templates",
            ),
            ("{{ 0x }}", "illegal number syntax"),
            ("{{ 1.2.3 }}", "unexpected \".3\" in operand"),
            ("{{ 99999999999999999999 }}", "integer overflow"),
            ("{{ \"a\".Foo }}", "unexpected .Foo after term"),
            ("{{ (1 }}", "unclosed left paren"),
            ("{{ $i, $e := list 1 }}", "too many declarations in command"),
        ];
        for (src, want) in cases {
            let err = parse_err(src);
            assert!(err.contains(want), "{src:?}: got {err:?}, want {want:?}");
        }
    }

    #[test]
    fn render_errors_are_clear() {
        let cases: &[(&str, &str)] = &[
            (
                "{{ .KeyID | trunc 3 | atoi | upper }}",
                "wrong type for value; expected string; got int (line 1, column 30)",
            ),
            (
                "{{ div 1 0 }}",
                "error calling div: runtime error: integer divide by zero",
            ),
            (
                "{{ fail \"no key for you\" }}",
                "error calling fail: no key for you",
            ),
            (
                "{{ index (list 1) 5 }}",
                "error calling index: index out of range: 5",
            ),
            (
                "{{ substr 5 2 .KeyID }}",
                "error calling substr: runtime error: slice bounds out of range",
            ),
            ("{{ repeat -1 \"x\" }}", "negative Repeat count"),
            (
                "{{ repeat 100000000 \"x\" }}",
                "exceeds the 1048576-byte limit",
            ),
            ("{{ until 1000000000 }}", "exceeds the 100000-item limit"),
            ("{{ first \"abc\" }}", "Cannot find first on type string"),
            (
                "{{ (list 1).X }}",
                "can't evaluate field X in type []interface {}",
            ),
            ("{{ lt 1 \"a\" }}", "incompatible types for comparison"),
            ("{{ eq (list) (list) }}", "non-comparable types"),
            (
                "{{ regexFind \"(\" .KeyID }}",
                "error calling regexFind: regexp: Compile(\"(\")",
            ),
            ("{{ len 3 }}", "len of type int"),
            (
                "{{ range \"abc\" }}{{ end }}",
                "range can't iterate over abc",
            ),
            (
                "{{ $s := \"x\" }}{{ range until 30 }}{{ $s = print $s $s }}{{ end }}",
                "limit",
            ),
        ];
        for (src, want) in cases {
            let err = render_err(src);
            assert!(err.contains(want), "{src:?}: got {err:?}, want {want:?}");
        }
    }

    #[test]
    fn deep_loops_hit_the_step_limit() {
        let err = render_err(
            "{{ range until 1000 }}{{ range until 1000 }}{{ range until 1000 }}{{ end }}{{ end }}{{ end }}",
        );
        assert!(err.contains("step limit"), "{err}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let src = format!("{{{{ {}1{} }}}}", "(".repeat(100), ")".repeat(100));
        assert!(parse_err(&src).contains("nests too deeply"));
        let src = format!(
            "{}x{}",
            "{{ if true }}".repeat(100),
            "{{ end }}".repeat(100)
        );
        assert!(parse_err(&src).contains("nests too deeply"));
        let ok = format!("{{{{ {}1{} }}}}", "(".repeat(30), ")".repeat(30));
        assert_eq!(render(&ok), "1");
    }

    #[test]
    fn huge_source_is_refused() {
        let src = "x".repeat(MAX_SOURCE + 1);
        assert!(parse_err(&src).contains("limit"));
    }

    #[test]
    fn template_is_send_sync_clone_and_debug_shows_source() {
        fn assert_traits<T: Send + Sync + Clone + fmt::Debug>() {}
        assert_traits::<KeyNameTemplate>();
        let t = KeyNameTemplate::parse("k-{{ .KeyID }}").unwrap();
        let dbg = format!("{:?}", t.clone());
        assert!(dbg.contains("k-{{ .KeyID }}"), "{dbg}");
    }

    use azkv_testkit::Rng;

    #[test]
    fn garbage_never_panics_or_hangs() {
        const PIECES: &[&str] = &[
            "{{",
            "}}",
            "{{-",
            "-}}",
            " ",
            "|",
            "(",
            ")",
            ".",
            ".KeyID",
            ".TrustDomain",
            "$",
            "$x",
            ":=",
            "=",
            ",",
            "\"",
            "\"a.b\"",
            "`r`",
            "'c'",
            "'",
            "1",
            "-3",
            "0x1F",
            "2.5",
            "1e3",
            "nil",
            "true",
            "if",
            "else",
            "end",
            "with",
            "range",
            "break",
            "continue",
            "/*",
            "*/",
            "replace",
            "\".\"",
            "\"-\"",
            "trunc",
            "upper",
            "printf",
            "\"%s%d%v\"",
            "list",
            "dict",
            "index",
            "len",
            "and",
            "or",
            "not",
            "eq",
            "lt",
            "default",
            "regexReplaceAll",
            "\"(a*)\"",
            "\"${1}\"",
            "until",
            "5",
            "repeat",
            "seq",
            "substr",
            "split",
            "._0",
            "first",
            "concat",
            "chunk",
            "b64dec",
            "abbrevboth",
            "wrapWith",
            "snakecase",
            "camelcase",
            "kebabcase",
            "swapcase",
            "now",
            "foo",
            "é",
            "\n",
            "x",
            "-",
            "\\",
            "{",
            "}",
            "slice",
            "toDecimal",
            "round",
            "fail",
            "dig",
        ];
        let contexts = [
            CTX,
            TemplateContext {
                trust_domain: "",
                server_id: "",
                key_id: "",
            },
            TemplateContext {
                trust_domain: "a.b_c-d.ÉÀ",
                server_id: "\u{FFFD}\u{0}",
                key_id: "x.y+z",
            },
        ];
        let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15);
        let mut parsed = 0;
        for i in 0..30_000 {
            let src: String = if i % 10 == 0 {
                // Raw bytes, lossily decoded, to reach odd characters.
                let bytes: Vec<u8> = (0..rng.below(40)).map(|_| rng.next_u64() as u8).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                (0..rng.below(24))
                    .map(|_| PIECES[rng.below(PIECES.len())])
                    .collect()
            };
            if let Ok(t) = KeyNameTemplate::parse(&src) {
                parsed += 1;
                for ctx in &contexts {
                    let _ = t.render(ctx);
                }
            }
        }
        // The generator must exercise the evaluator too, not only parse errors.
        assert!(parsed > 1_000, "only {parsed} random templates parsed");
    }

    #[test]
    fn mutated_valid_templates_never_panic() {
        let seeds = [
            r#"spire-{{ .TrustDomain | replace "." "-" }}-{{ .KeyID }}"#,
            r#"{{ range $i, $e := splitList "." .TrustDomain }}{{ if $i }}-{{ end }}{{ $e | trunc 3 }}{{ end }}"#,
            r#"{{- with $k := .KeyID | lower -}}{{ printf "%s-%05d" $k (len $k) }}{{- end -}}"#,
        ];
        let mut rng = Rng::new(42);
        for _ in 0..20_000 {
            let seed = seeds[rng.below(seeds.len())];
            let mut chars: Vec<char> = seed.chars().collect();
            for _ in 0..=rng.below(3) {
                let at = rng.below(chars.len() + 1);
                match rng.below(3) {
                    0 if at < chars.len() => {
                        chars.remove(at);
                    }
                    1 => chars.insert(
                        at,
                        ['{', '}', '"', '|', '(', ')', '$', '.', '-', ' '][rng.below(10)],
                    ),
                    _ if at < chars.len() => chars[at] = char::from(b' ' + rng.below(95) as u8),
                    _ => {}
                }
            }
            let src: String = chars.into_iter().collect();
            if let Ok(t) = KeyNameTemplate::parse(&src) {
                let _ = t.render(&CTX);
            }
        }
    }

    /// Templates written to burn CPU or memory: each ends (with an error, or for a few a
    /// result) in well under a second; the bound asserted is loose, the point is that none
    /// runs away.
    #[test]
    fn hostile_templates_end_quickly() {
        let big = r#"{{ $s := repeat 1000000 "x" }}"#;
        let cases: Vec<(String, &str)> = vec![
            (r#"{{ "x" | repeat 100000000 }}"#.into(), "byte limit"),
            (r#"{{ repeat 1000 (repeat 1000 (repeat 1000 "x")) }}"#.into(), "byte limit"),
            // Large inputs read again and again.
            (format!(r#"{big}{{{{ range until 100000 }}}}{{{{ if contains "y" $s }}}}{{{{ end }}}}{{{{ end }}}}"#), "step limit"),
            (format!(r#"{big}{{{{ range until 100000 }}}}{{{{ $_ := sha256sum $s }}}}{{{{ end }}}}"#), "step limit"),
            (format!(r#"{big}{{{{ range until 100000 }}}}{{{{ $_ := regexMatch "y" $s }}}}{{{{ end }}}}"#), "step limit"),
            (format!(r#"{big}{{{{ range until 100000 }}}}{{{{ $_ := regexReplaceAll "x" $s "" }}}}{{{{ end }}}}"#), "step limit"),
            (format!(r#"{big}{{{{ range until 100000 }}}}{{{{ $_ := replace "x" "yy" $s }}}}{{{{ end }}}}"#), "limit"),
            (r#"{{ $l := until 100000 }}{{ range $l }}{{ $_ := has 99999 $l }}{{ end }}"#.into(), "step limit"),
            (r#"{{ $l := list 1 }}{{ range until 16 }}{{ $l = concat $l $l }}{{ end }}{{ range until 1000 }}{{ $_ := print $l }}{{ end }}"#.into(), "step limit"),
            // Work that grows faster than the input.
            (r#"{{ until 100000 | uniq | len }}"#.into(), "step limit"),
            (r#"{{ $l := until 100000 }}{{ range until 1000 }}{{ $_ := sortAlpha $l }}{{ end }}"#.into(), "step limit"),
            (r#"{{ $s := repeat 100000 "a" }}{{ regexReplaceAll "(a|aa){50}(b|a)" $s "x" }}"#.into(), "step limit"),
            (r#"{{ range $i := until 100000 }}{{ $_ := regexMatch (printf "(a|b){50}%d" $i) "ab" }}{{ end }}"#.into(), "step limit"),
            (r#"{{ $s := repeat 100000 "y" }}{{ $c := print (repeat 100000 "x") "y" }}{{ trimAll $c $s | len }}"#.into(), ""),
            // Output built before it could be checked.
            (format!(r#"{{{{ printf "{}" {} }}}}"#, "%1000000d".repeat(40), "1 ".repeat(40)), "byte limit"),
            (r#"{{ printf "%1000000v" (until 100000) }}"#.into(), "byte limit"),
            // Values shared or nested to blow up walking, printing and dropping them.
            (r#"{{ $x := list 1 1 }}{{ range until 40 }}{{ $x = list $x $x }}{{ end }}{{ $x }}"#.into(), "limit"),
            (r#"{{ $x := list }}{{ range until 60000 }}{{ $x = list $x }}{{ end }}{{ len $x }}"#.into(), "more than 100 deep"),
        ];
        for (src, want) in cases {
            let t = KeyNameTemplate::parse(&src).unwrap_or_else(|e| panic!("parse {src:?}: {e}"));
            let started = std::time::Instant::now();
            let result = t.render(&CTX);
            let took = started.elapsed();
            assert!(
                took < std::time::Duration::from_secs(2),
                "{src:?} took {took:?}"
            );
            match result {
                Err(e) => assert!(
                    !want.is_empty() && e.to_string().contains(want),
                    "{src:?}: {e}"
                ),
                Ok(out) => assert!(want.is_empty(), "{src:?} rendered {} bytes", out.len()),
            }
        }
    }

    #[test]
    fn a_pattern_is_compiled_once_per_render() {
        let compiled = sprig::regexes_compiled;
        let t = KeyNameTemplate::parse(
            r#"{{ range until 50 }}{{ if regexMatch "^[a-z]+-[0-9]+$" "abc-12" }}x{{ end }}{{ $_ := regexMatch "(" "x" }}{{ end }}"#,
        )
        .unwrap();
        let before = compiled();
        assert_eq!(t.render(&CTX).unwrap(), "x".repeat(50));
        // Two patterns (one invalid, its error kept too), 100 uses.
        assert_eq!(compiled() - before, 2);
        // Kept for one render only.
        t.render(&CTX).unwrap();
        assert_eq!(compiled() - before, 4);
    }
}
