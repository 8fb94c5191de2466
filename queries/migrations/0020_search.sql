-- Full-text search over message content (issue 15; docs/search.md explains the choices).
--
-- The configuration is 'simple' (lower-casing, no stemming, no stop words): agents write
-- ids, code and several languages, where an English stemmer would merge words it should
-- not and drop words ("it", "a") that are part of names. Before PostgreSQL's parser sees
-- the text, two things happen, in search_text() for stored messages and search_query()
-- for what is asked:
--   * accents go: NFKD splits 'é' into 'e' and a combining accent, which is removed, and
--     folds compatibility forms (full-width 'Ａ', the 'ﬁ' ligature); a few letters that
--     do not decompose are mapped by hand (ß, æ, œ, ø, ł, đ). normalize() is built in,
--     unlike the unaccent extension, which the embedded server does not ship.
--   * every punctuation mark is set apart by U+0001 on both sides. The parser then
--     sees the parts of compound tokens as separate, adjacent words: 'build-1234' is
--     'build' '1234' (on its own the parser reads '-1234' as a negative number),
--     'app.config' 'app' 'config' (else one host name), a path or URL its segments.
--     A query term with punctuation inside becomes the phrase of its parts, so
--     'build-1234' finds exactly those adjacent words and 'config' finds 'app.config'.
-- U+0001 is neither a letter nor a space to the parser and never changes the meaning:
-- search_snippet() removes it again.

CREATE FUNCTION search_fold(body text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
AS $$
SELECT translate(
         replace(replace(replace(replace(replace(replace(
           regexp_replace(normalize(body, NFKD), '[\u0300-\u036f]+', '', 'g'),
           'ß', 'ss'), 'æ', 'ae'), 'Æ', 'AE'), 'œ', 'oe'), 'Œ', 'OE'), E'\u0001', ''),
         'øØłŁđĐ', 'oOlLdD')
$$;

-- Stored text as the parser is to see it: folded, each punctuation mark set apart.
-- The marks: ASCII punctuation, Latin-1 punctuation (« » ¿ ·), general punctuation
-- (dashes, curly quotes, …) and CJK punctuation.
CREATE FUNCTION search_text(body text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
AS $$
SELECT regexp_replace(search_fold(body),
                      '([!-/:-@\[-`{-~\u00a1-\u00bf\u2000-\u206f\u3000-\u303f])',
                      E'\u0001\\1\u0001', 'g')
$$;

-- What a client asks, in web-search syntax, as a tsquery; never raises. The syntax's
-- own marks are kept: '"' (phrases) and a '-' that starts a word (exclusion); any
-- other punctuation only separates words (a term with punctuation inside is a phrase).
CREATE FUNCTION search_query(asked text) RETURNS tsquery
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
AS $$
SELECT websearch_to_tsquery('simple',
         regexp_replace(
           regexp_replace(search_fold(asked),
                          '[!#-,./:-@\[-`{-~\u00a1-\u00bf\u2000-\u206f\u3000-\u303f]',
                          E'\u0001', 'g'),
           '(?<=[^[:space:]"])-', E'\u0001', 'g'))
$$;

-- A few words of a message around what matched, each match between U+E000 and U+E001
-- (private-use characters, removed from the text first, so a marker is always one).
CREATE FUNCTION search_snippet(body text, query tsquery) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
AS $$
SELECT replace(ts_headline('simple',
                           search_text(translate(body, E'\uE000\uE001', '')),
                           query,
                           E'StartSel="\uE000", StopSel="\uE001", MaxWords=30, MinWords=10, '
                           'ShortWord=0, MaxFragments=2, FragmentDelimiter=" … "'),
               E'\u0001', '')
$$;

-- Stored once per message (a rewrite of the table when this migration runs; see
-- docs/search.md) so ranking reads it instead of parsing every matching message again.
ALTER TABLE messages
    ADD COLUMN search_vector tsvector
    GENERATED ALWAYS AS (to_tsvector('simple', search_text(content))) STORED;
CREATE INDEX messages_search ON messages USING gin (search_vector);
