//! Go's `fmt` as templates see it: `%v` printing of template values and `printf` with the
//! verbs `v s d f F e E g G x X o b q t c %`, flags `- + 0 space #`, width and precision
//! (`*` too). Mismatched verbs print Go's `%!d(string=…)` markers rather than failing.
//!
//! Must not: allocate per digit or differ from Go on the float formats rules use
//! (`%.2f`, `%.4g`, `%g`, `%v`, `%e`).

use super::Val;

/// Go's `strconv.FormatFloat(v, 'e', prec, 64)` (`prec` digits after the point).
pub fn format_e(v: f64, prec: usize, upper: bool) -> String {
    if !v.is_finite() {
        return special(v);
    }
    let s = format!("{v:.prec$e}");
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if exp < 0 { '-' } else { '+' };
    let e = if upper { 'E' } else { 'e' };
    format!("{mantissa}{e}{sign}{:02}", exp.abs())
}

fn special(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v > 0.0 {
        "+Inf".to_owned()
    } else {
        "-Inf".to_owned()
    }
}

/// Go's `strconv.FormatFloat(v, 'g', prec, 64)`; `prec = None` is the shortest form (`%v`).
pub fn format_g(v: f64, prec: Option<usize>, upper: bool) -> String {
    if !v.is_finite() {
        return special(v);
    }
    let (digits, exp) = match prec {
        None => {
            // Shortest round-trip digits; exponent form below 1e-4 or from 1e21 as `%v`? No:
            // Go uses 6 as the exponent threshold for shortest %g/%v.
            let s = format!("{:e}", v.abs());
            let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
            (m.replace('.', ""), e.parse::<i32>().unwrap_or(0))
        }
        Some(p) => {
            let p = p.max(1);
            let s = format!("{:.*e}", p - 1, v.abs());
            let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
            (m.replace('.', ""), e.parse::<i32>().unwrap_or(0))
        }
    };
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    let eprec = match prec {
        None => 6,
        Some(p) => p.max(1) as i32,
    };
    let neg = v.is_sign_negative() && v != 0.0 || (v == 0.0 && v.is_sign_negative());
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if v == 0.0 {
        out.push('0');
        return out;
    }
    if exp < -4 || exp >= eprec {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push(if upper { 'E' } else { 'e' });
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.abs()));
    } else if exp < 0 {
        out.push_str("0.");
        for _ in 0..(-exp - 1) {
            out.push('0');
        }
        out.push_str(digits);
    } else {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.push_str(digits);
            for _ in digits.len()..int_len {
                out.push('0');
            }
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    }
    out
}

/// Go's `%v` of a template value.
pub fn print_value(v: &Val) -> String {
    match v {
        Val::Nil => "<no value>".to_owned(),
        Val::Bool(b) => b.to_string(),
        Val::Int(i) => i.to_string(),
        Val::Float(f) => format_g(*f, None, false),
        Val::Str(s) => s.to_string(),
        Val::Map(m) => {
            let inner: Vec<String> = m.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            format!("map[{}]", inner.join(" "))
        }
        Val::Samples(s) => {
            let inner: Vec<String> = s
                .iter()
                .map(|s| {
                    format!(
                        "{{map[{}] {}}}",
                        map_inner(&s.labels),
                        format_g(s.value, None, false)
                    )
                })
                .collect();
            format!("[{}]", inner.join(" "))
        }
        Val::Sample(s) => format!(
            "&{{map[{}] {}}}",
            map_inner(&s.labels),
            format_g(s.value, None, false)
        ),
        Val::Args(a) => {
            let inner: Vec<String> = a
                .iter()
                .enumerate()
                .map(|(i, v)| format!("arg{i}:{}", print_value(v)))
                .collect();
            format!("map[{}]", inner.join(" "))
        }
        Val::Root(_) => "{…}".to_owned(),
    }
}

fn map_inner(m: &std::collections::BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Default, Clone, Copy)]
struct Flags {
    minus: bool,
    plus: bool,
    zero: bool,
    space: bool,
    sharp: bool,
}

fn pad(s: String, width: Option<usize>, flags: Flags, numeric: bool) -> String {
    let Some(w) = width else { return s };
    let len = s.chars().count();
    if len >= w {
        return s;
    }
    let fill = w - len;
    if flags.minus {
        format!("{s}{}", " ".repeat(fill))
    } else if flags.zero && numeric {
        // Zeros go after the sign.
        let (sign, rest) = match s.as_bytes().first() {
            Some(b'-' | b'+' | b' ') => s.split_at(1),
            _ => ("", s.as_str()),
        };
        format!("{sign}{}{rest}", "0".repeat(fill))
    } else {
        format!("{}{s}", " ".repeat(fill))
    }
}

fn with_sign(s: String, negative: bool, flags: Flags) -> String {
    if negative || s.starts_with('-') {
        s
    } else if flags.plus {
        format!("+{s}")
    } else if flags.space {
        format!(" {s}")
    } else {
        s
    }
}

/// Go's `fmt.Sprintf` over template values.
pub fn sprintf(format: &str, args: &[Val]) -> String {
    let mut out = String::new();
    let mut next = 0usize;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut flags = Flags::default();
        while let Some(&f) = chars.peek() {
            match f {
                '-' => flags.minus = true,
                '+' => flags.plus = true,
                '0' => flags.zero = true,
                ' ' => flags.space = true,
                '#' => flags.sharp = true,
                _ => break,
            }
            chars.next();
        }
        let number = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>, next: &mut usize| {
            if chars.peek() == Some(&'*') {
                chars.next();
                let v = args.get(*next).cloned();
                *next += 1;
                return match v {
                    Some(Val::Int(i)) if i >= 0 => Some(i as usize),
                    _ => None,
                };
            }
            let mut n: Option<usize> = None;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                n = Some(n.unwrap_or(0) * 10 + d as usize);
                chars.next();
            }
            n
        };
        let width = number(&mut chars, &mut next);
        let precision = if chars.peek() == Some(&'.') {
            chars.next();
            Some(number(&mut chars, &mut next).unwrap_or(0))
        } else {
            None
        };
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next) else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        next += 1;
        out.push_str(&format_one(verb, arg, width, precision, flags));
    }
    if next < args.len() {
        out.push_str("%!(EXTRA ");
        let extra: Vec<String> = args[next..]
            .iter()
            .map(|a| format!("{}={}", a.type_name(), print_value(a)))
            .collect();
        out.push_str(&extra.join(", "));
        out.push(')');
    }
    out
}

fn bad_verb(verb: char, arg: &Val) -> String {
    match arg {
        Val::Nil => format!("%!{verb}(<nil>)"),
        _ => format!("%!{verb}({}={})", arg.type_name(), print_value(arg)),
    }
}

fn format_float(verb: char, v: f64, precision: Option<usize>, flags: Flags) -> String {
    let s = match verb {
        'e' | 'E' => format_e(v, precision.unwrap_or(6), verb == 'E'),
        'f' | 'F' => {
            if v.is_finite() {
                format!("{v:.*}", precision.unwrap_or(6))
            } else {
                special(v)
            }
        }
        'g' | 'G' => format_g(v, precision, verb == 'G'),
        _ => format_g(v, precision, false),
    };
    // Go prints +Inf as "+Inf" only with the plus flag; plain %f of +Inf is "+Inf" too.
    with_sign(s, v.is_sign_negative(), flags)
}

fn format_one(
    verb: char,
    arg: &Val,
    width: Option<usize>,
    precision: Option<usize>,
    flags: Flags,
) -> String {
    let (s, numeric) = match (verb, arg) {
        ('v', Val::Float(f)) => (format_float('g', *f, precision, flags), true),
        ('v', Val::Int(i)) | ('d', Val::Int(i)) => (with_sign(i.to_string(), *i < 0, flags), true),
        ('v', other) => (print_value(other), false),
        ('s', Val::Str(s)) => {
            let s = match precision {
                Some(p) => s.chars().take(p).collect(),
                None => s.to_string(),
            };
            (s, false)
        }
        (
            's',
            v @ (Val::Map(_) | Val::Samples(_) | Val::Sample(_) | Val::Args(_) | Val::Bool(_)),
        ) => {
            // Go formats composite values element-wise with %s; booleans mis-verb.
            match v {
                Val::Bool(_) => (bad_verb(verb, v), false),
                _ => (print_value(v), false),
            }
        }
        ('q', Val::Str(s)) => (serde_json::to_string(&**s).unwrap_or_default(), false),
        ('t', Val::Bool(b)) => (b.to_string(), false),
        ('e' | 'E' | 'f' | 'F' | 'g' | 'G', Val::Float(f)) => {
            (format_float(verb, *f, precision, flags), true)
        }
        ('x' | 'X', Val::Int(i)) => {
            let s = if verb == 'x' {
                format!("{:x}", i.unsigned_abs())
            } else {
                format!("{:X}", i.unsigned_abs())
            };
            let s = if flags.sharp { format!("0x{s}") } else { s };
            (
                with_sign(if *i < 0 { format!("-{s}") } else { s }, *i < 0, flags),
                true,
            )
        }
        ('x' | 'X', Val::Str(s)) => {
            let hex: String = s
                .bytes()
                .map(|b| {
                    if verb == 'x' {
                        format!("{b:02x}")
                    } else {
                        format!("{b:02X}")
                    }
                })
                .collect();
            (hex, false)
        }
        ('o', Val::Int(i)) => (with_sign(format!("{:o}", i), *i < 0, flags), true),
        ('b', Val::Int(i)) => (with_sign(format!("{:b}", i), *i < 0, flags), true),
        ('c', Val::Int(i)) => (
            char::from_u32(*i as u32)
                .map(String::from)
                .unwrap_or_default(),
            false,
        ),
        ('d', Val::Float(_))
        | ('s', _)
        | ('q', _)
        | ('t', _)
        | ('d', _)
        | ('e' | 'E' | 'f' | 'F' | 'g' | 'G', _)
        | ('x' | 'X' | 'o' | 'b' | 'c', _) => (bad_verb(verb, arg), false),
        (_, _) => (
            format!("%!{verb}({}={})", arg.type_name(), print_value(arg)),
            false,
        ),
    };
    pad(s, width, flags, numeric)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_like_go() {
        assert_eq!(format_g(1234567.0, None, false), "1.234567e+06");
        assert_eq!(format_g(100000.0, None, false), "100000");
        assert_eq!(format_g(0.5, None, false), "0.5");
        assert_eq!(format_g(0.00001, None, false), "1e-05");
        assert_eq!(format_g(1234.5678, Some(4), false), "1235");
        assert_eq!(format_g(12345.678, Some(4), false), "1.235e+04");
        assert_eq!(format_g(0.000123456, Some(4), false), "0.0001235");
        assert_eq!(format_g(1.0, Some(4), false), "1");
        assert_eq!(format_g(-2.5, Some(4), false), "-2.5");
        assert_eq!(format_g(0.0, Some(4), false), "0");
        assert_eq!(format_g(f64::NAN, Some(4), false), "NaN");
        assert_eq!(format_e(1500.0, 6, false), "1.500000e+03");
        assert_eq!(format_e(0.0, 2, false), "0.00e+00");
    }

    #[test]
    fn printf_verbs() {
        let f = |s: &str, a: &[Val]| sprintf(s, a);
        assert_eq!(f("%.2f", &[Val::Float(1.23456)]), "1.23");
        assert_eq!(f("%d%%", &[Val::Int(42)]), "42%");
        assert_eq!(
            f(
                "%5.1f|%-5s|%05d",
                &[Val::Float(2.25), Val::Str("ab".into()), Val::Int(-42)]
            ),
            "  2.2|ab   |-0042"
        );
        assert_eq!(f("%s", &[Val::Float(1.5)]), "%!s(float64=1.5)");
        assert_eq!(f("%d", &[Val::Float(1.5)]), "%!d(float64=1.5)");
        assert_eq!(f("%d %d", &[Val::Int(1)]), "1 %!d(MISSING)");
        assert_eq!(f("x", &[Val::Int(1)]), "x%!(EXTRA int=1)");
        assert_eq!(
            f(
                "%v %v %q",
                &[Val::Float(1e6), Val::Bool(true), Val::Str("a\"".into())]
            ),
            "1e+06 true \"a\\\"\""
        );
        assert_eq!(f("%+.1e", &[Val::Float(12345.0)]), "+1.2e+04");
        assert_eq!(f("%x", &[Val::Int(255)]), "ff");
    }
}
