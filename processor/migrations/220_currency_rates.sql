-- Revenue in one reporting currency per deployment (CLICKSTREAM_REPORTING_CURRENCY).
-- `clickstream rates load FILE` fills exchange_rates from the ECB reference-rate CSV, already
-- converted: `rate` is how many units of `reporting_currency` one unit of `currency` was worth
-- on `day`. The processor converts each amount at the rate of its event's UTC day, or the latest
-- earlier one within 7 days (processor/currency.py). Rows are per reporting currency, so a
-- deployment that changes its setting never reads another currency's rates.
CREATE TABLE exchange_rates (
    reporting_currency text    NOT NULL,
    currency           text    NOT NULL,
    day                date    NOT NULL,
    rate               numeric NOT NULL CHECK (rate > 0),
    PRIMARY KEY (reporting_currency, currency, day)
);

-- Orders whose currency had no rate for their day: counted here in their own currency, per UTC
-- hour, and left out of every revenue aggregate (which would otherwise sum two currencies).
CREATE TABLE unconverted_revenue_hour (
    hour     timestamptz    NOT NULL,
    currency text           NOT NULL,
    orders   bigint         NOT NULL DEFAULT 0,
    revenue  numeric(16, 2) NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, currency)
);
