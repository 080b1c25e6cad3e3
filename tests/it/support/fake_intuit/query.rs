//! The query language: the subset QuickBooks documents (lexer, parser, filter), enough for
//! our entities.

use super::*;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    Sym(&'static str),
}

pub(super) enum QueryError {
    /// 400 Fault 4000 "Error parsing query".
    Parse(String),
    /// 400 Fault 4001 "Invalid query".
    Invalid(String),
    /// Valid QuickBooks, but beyond what the fake implements: fails the test loudly.
    Unsupported(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Like,
}

pub(super) struct Cond {
    pub(super) field: String,
    pub(super) op: Op,
    pub(super) values: Vec<String>,
}

pub(super) struct Query {
    pub(super) count: bool,
    pub(super) entity: String,
    pub(super) conds: Vec<Cond>,
    pub(super) order: Vec<(String, bool)>,
    pub(super) start: usize,
    pub(super) max: usize,
}

pub(super) fn lex(q: &str) -> Result<Vec<Tok>, QueryError> {
    let chars: Vec<char> = q.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(QueryError::Parse("unterminated string".into())),
                    Some('\\') if chars.get(i + 1) == Some(&'\'') => {
                        s.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(&ch) => {
                        s.push(ch);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Str(s));
        } else if c.is_ascii_digit()
            || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            out.push(Tok::Num(chars[start..i].iter().collect()));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '.')
            {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let sym = match two.as_str() {
                "<=" => Some("<="),
                ">=" => Some(">="),
                "!=" => Some("!="),
                "<>" => Some("!="),
                _ => None,
            };
            if let Some(sym) = sym {
                out.push(Tok::Sym(sym));
                i += 2;
                continue;
            }
            let sym = match c {
                '*' => "*",
                '(' => "(",
                ')' => ")",
                ',' => ",",
                '=' => "=",
                '<' => "<",
                '>' => ">",
                _ => {
                    return Err(QueryError::Parse(format!(
                        "Encountered \"{c}\" at column {}",
                        i + 1
                    )))
                }
            };
            out.push(Tok::Sym(sym));
            i += 1;
        }
    }
    Ok(out)
}

pub(super) struct Parser {
    pub(super) toks: Vec<Tok>,
    pub(super) pos: usize,
}

impl Parser {
    pub(super) fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    pub(super) fn peek_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s.eq_ignore_ascii_case(kw))
    }

    pub(super) fn eat_kw(&mut self, kw: &str) -> bool {
        let hit = self.peek_kw(kw);
        if hit {
            self.pos += 1;
        }
        hit
    }

    pub(super) fn expect_kw(&mut self, kw: &str) -> Result<(), QueryError> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            Err(self.unexpected(kw))
        }
    }

    pub(super) fn eat_sym(&mut self, sym: &str) -> bool {
        let hit = matches!(self.peek(), Some(Tok::Sym(s)) if *s == sym);
        if hit {
            self.pos += 1;
        }
        hit
    }

    pub(super) fn expect_sym(&mut self, sym: &str) -> Result<(), QueryError> {
        if self.eat_sym(sym) {
            Ok(())
        } else {
            Err(self.unexpected(sym))
        }
    }

    pub(super) fn unexpected(&self, wanted: &str) -> QueryError {
        QueryError::Parse(match self.peek() {
            Some(t) => format!("Encountered {t:?}, expected {wanted}"),
            None => format!("Encountered end of query, expected {wanted}"),
        })
    }

    pub(super) fn ident(&mut self) -> Result<String, QueryError> {
        match self.peek().cloned() {
            Some(Tok::Ident(s)) => {
                self.pos += 1;
                Ok(s)
            }
            _ => Err(self.unexpected("an identifier")),
        }
    }

    pub(super) fn number(&mut self) -> Result<usize, QueryError> {
        match self.peek().cloned() {
            Some(Tok::Num(n)) => {
                self.pos += 1;
                n.parse()
                    .map_err(|_| QueryError::Invalid(format!("value {n} is not a count")))
            }
            _ => Err(self.unexpected("a number")),
        }
    }

    pub(super) fn literal(&mut self) -> Result<String, QueryError> {
        match self.peek().cloned() {
            Some(Tok::Str(s)) | Some(Tok::Num(s)) => {
                self.pos += 1;
                Ok(s)
            }
            Some(Tok::Ident(s))
                if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") =>
            {
                self.pos += 1;
                Ok(s.to_ascii_lowercase())
            }
            _ => Err(self.unexpected("a value")),
        }
    }
}

pub(super) fn parse_query(q: &str) -> Result<Query, QueryError> {
    let mut p = Parser {
        toks: lex(q)?,
        pos: 0,
    };
    p.expect_kw("select")?;
    let count = if p.eat_kw("count") {
        p.expect_sym("(")?;
        p.expect_sym("*")?;
        p.expect_sym(")")?;
        true
    } else if p.eat_sym("*") {
        false
    } else {
        return Err(QueryError::Unsupported(format!(
            "field projections are not implemented by the fake: {q}"
        )));
    };
    p.expect_kw("from")?;
    let entity = p.ident()?.to_ascii_lowercase();
    let mut conds = Vec::new();
    if p.eat_kw("where") {
        loop {
            let field = p.ident()?.to_ascii_lowercase();
            let op = if p.eat_kw("in") {
                Op::In
            } else if p.eat_kw("like") {
                Op::Like
            } else if p.eat_sym("=") {
                Op::Eq
            } else if p.eat_sym("!=") {
                Op::Ne
            } else if p.eat_sym("<=") {
                Op::Le
            } else if p.eat_sym(">=") {
                Op::Ge
            } else if p.eat_sym("<") {
                Op::Lt
            } else if p.eat_sym(">") {
                Op::Gt
            } else {
                return Err(p.unexpected("an operator"));
            };
            let values = if op == Op::In {
                p.expect_sym("(")?;
                let mut vs = vec![p.literal()?];
                while p.eat_sym(",") {
                    vs.push(p.literal()?);
                }
                p.expect_sym(")")?;
                vs
            } else {
                vec![p.literal()?]
            };
            conds.push(Cond { field, op, values });
            if !p.eat_kw("and") {
                break;
            }
        }
    }
    let mut order = Vec::new();
    let orderby = p.eat_kw("orderby")
        || (p.peek_kw("order") && {
            p.pos += 1;
            p.expect_kw("by")?;
            true
        });
    if orderby {
        loop {
            let field = p.ident()?.to_ascii_lowercase();
            let desc = if p.eat_kw("desc") {
                true
            } else {
                p.eat_kw("asc");
                false
            };
            order.push((field, desc));
            if !p.eat_sym(",") {
                break;
            }
        }
    }
    let mut start = 1;
    let mut max = DEFAULT_MAX_RESULTS;
    loop {
        if p.eat_kw("startposition") {
            start = p.number()?;
        } else if p.eat_kw("maxresults") {
            max = p.number()?;
        } else {
            break;
        }
    }
    if p.peek().is_some() {
        return Err(p.unexpected("end of query"));
    }
    if max > MAX_MAX_RESULTS {
        return Err(QueryError::Invalid(format!(
            "value {max} is too large. Max allowed value is {MAX_MAX_RESULTS}"
        )));
    }
    Ok(Query {
        count,
        entity,
        conds,
        order,
        start: start.max(1),
        max,
    })
}

/// A row the query engine can filter: field (lower-case) → comparable text.
pub(super) struct QRow {
    pub(super) fields: Vec<(&'static str, String)>,
    pub(super) json: String,
}

impl QRow {
    pub(super) fn get(&self, field: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, v)| v.as_str())
    }
}

pub(super) fn compare_values(a: &str, b: &str) -> Ordering {
    if let (Ok(x), Ok(y)) = (Decimal::from_str(a), Decimal::from_str(b)) {
        return x.cmp(&y);
    }
    if let (Ok(x), Ok(y)) = (
        DateTime::parse_from_rfc3339(a),
        DateTime::parse_from_rfc3339(b),
    ) {
        return x.cmp(&y);
    }
    a.to_ascii_lowercase().cmp(&b.to_ascii_lowercase())
}

pub(super) fn like(value: &str, pattern: &str) -> bool {
    let v = value.to_ascii_lowercase();
    let p = pattern.to_ascii_lowercase();
    let parts: Vec<&str> = p.split('%').collect();
    if parts.len() == 1 {
        return v == p;
    }
    let mut rest = v.as_str();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

pub(super) fn matches(row: &QRow, cond: &Cond) -> bool {
    let Some(value) = row.get(&cond.field) else {
        return false;
    };
    let first = cond.values.first().map(String::as_str).unwrap_or_default();
    match cond.op {
        Op::Eq => compare_values(value, first) == Ordering::Equal,
        Op::Ne => compare_values(value, first) != Ordering::Equal,
        Op::Lt => compare_values(value, first) == Ordering::Less,
        Op::Le => compare_values(value, first) != Ordering::Greater,
        Op::Gt => compare_values(value, first) == Ordering::Greater,
        Op::Ge => compare_values(value, first) != Ordering::Less,
        Op::In => cond
            .values
            .iter()
            .any(|v| compare_values(value, v) == Ordering::Equal),
        Op::Like => like(value, first),
    }
}

pub(super) fn run_query(st: &mut State, realm: &str, text: &str, now: DateTime<Utc>) -> Resp {
    let query = match parse_query(text) {
        Ok(q) => q,
        Err(QueryError::Parse(detail)) => {
            return validation_fault(
                now,
                "4000",
                "Error parsing query",
                &format!("QueryParserError: {detail}"),
            )
        }
        Err(QueryError::Invalid(detail)) => {
            return validation_fault(
                now,
                "4001",
                "Invalid query",
                &format!("QueryValidationError: {detail}"),
            )
        }
        Err(QueryError::Unsupported(detail)) => {
            st.failures.push(format!("fake Intuit: {detail}"));
            return text_resp_500(&detail);
        }
    };
    if query.entity == "exchangerate" && st.config.exchange_rate_query_fault {
        return validation_fault(
            now,
            "4001",
            "Invalid query",
            "QueryValidationError: the ExchangeRate query is refused (fake: exchange_rate_query_fault)",
        );
    }
    let company = &st.companies[realm];
    let (name, queryable, rows): (&str, &[&str], Vec<QRow>) = match query.entity.as_str() {
        "exchangerate" => (
            "ExchangeRate",
            &["sourcecurrencycode", "asofdate", "metadata.lastupdatedtime"],
            // A company without multicurrency has no rates to list (UNCERTAIN at Intuit).
            if company.spec.multicurrency {
                company
                    .rates
                    .iter()
                    .map(|((date, source), row)| QRow {
                        fields: vec![
                            ("sourcecurrencycode", source.clone()),
                            ("asofdate", date.format("%Y-%m-%d").to_string()),
                            ("metadata.lastupdatedtime", qbo_meta_time(row.updated)),
                        ],
                        json: exchange_rate_json(*date, source, row),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        ),
        "companycurrency" => (
            "CompanyCurrency",
            &["id", "code", "name", "active", "metadata.lastupdatedtime"],
            if company.spec.multicurrency {
                company
                    .currencies
                    .iter()
                    .map(|c| QRow {
                        fields: vec![
                            ("id", c.id.to_string()),
                            ("code", c.code.clone()),
                            ("name", currency_name(&c.code).to_string()),
                            ("active", c.active.to_string()),
                            ("metadata.lastupdatedtime", qbo_meta_time(c.updated)),
                        ],
                        json: company_currency_json(c).to_string(),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        ),
        "companyinfo" => (
            "CompanyInfo",
            &[],
            vec![QRow {
                fields: Vec::new(),
                json: company_info_json(company).to_string(),
            }],
        ),
        "preferences" => (
            "Preferences",
            &[],
            vec![QRow {
                fields: Vec::new(),
                json: preferences_json(company).to_string(),
            }],
        ),
        other => {
            return validation_fault(
                now,
                "4000",
                "Error parsing query",
                &format!("QueryParserError: Invalid entity name {other}"),
            )
        }
    };
    for field in query
        .conds
        .iter()
        .map(|c| &c.field)
        .chain(query.order.iter().map(|(f, _)| f))
    {
        if !queryable.contains(&field.as_str()) {
            return validation_fault(
                now,
                "4001",
                "Invalid query",
                &format!("QueryValidationError: property '{field}' is not queryable"),
            );
        }
    }
    let mut hits: Vec<QRow> = rows
        .into_iter()
        .filter(|r| query.conds.iter().all(|c| matches(r, c)))
        .collect();
    let time = json_str(&qbo_time(now));
    if query.count {
        return raw_json_resp(
            StatusCode::OK,
            format!(
                "{{\"QueryResponse\":{{\"totalCount\":{}}},\"time\":{time}}}",
                hits.len()
            ),
        );
    }
    if !query.order.is_empty() {
        hits.sort_by(|a, b| {
            for (field, desc) in &query.order {
                let o = compare_values(a.get(field).unwrap_or(""), b.get(field).unwrap_or(""));
                let o = if *desc { o.reverse() } else { o };
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        });
    }
    let page: Vec<&QRow> = hits.iter().skip(query.start - 1).take(query.max).collect();
    if page.is_empty() {
        // No matches: QueryResponse is `{}` (doc §4).
        return raw_json_resp(
            StatusCode::OK,
            format!("{{\"QueryResponse\":{{}},\"time\":{time}}}"),
        );
    }
    let items: Vec<&str> = page.iter().map(|r| r.json.as_str()).collect();
    // maxResults is the number of entities returned (Intuit's definition). totalCount, shown in
    // the doc's example, is set to the same page count: a client must page by asking again
    // while a full page came back, never by trusting totalCount as the overall total.
    raw_json_resp(
        StatusCode::OK,
        format!(
            "{{\"QueryResponse\":{{\"{name}\":[{}],\"startPosition\":{},\"maxResults\":{},\
             \"totalCount\":{}}},\"time\":{time}}}",
            items.join(","),
            query.start,
            page.len(),
            page.len()
        ),
    )
}
