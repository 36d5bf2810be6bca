-- One row per user: their history of quotes, payments and policies (four tables, aggregates per user).
-- As a point-in-time training set, each row counts only what had happened by the spine row's time.
WITH quoted AS (
    SELECT user_id, count(*) AS quotes, count(CASE WHEN is_binded THEN 1 END) AS bound_quotes,
           count(DISTINCT quote_type) AS quote_types, max(creation_date) AS last_quote_at
    FROM quotes GROUP BY user_id
), paid AS (
    SELECT user_id, count(*) AS payments, count(CASE WHEN successful THEN 1 END) AS successful_payments
    FROM transactions GROUP BY user_id
), bought AS (
    SELECT user_id, count(*) AS policies, max(purchase_time) AS last_purchase_at
    FROM policies GROUP BY user_id
)
SELECT u.user_id, u.creation_date AS user_created,
       coalesce(q.quotes, 0) AS quotes, coalesce(q.bound_quotes, 0) AS bound_quotes,
       coalesce(q.quote_types, 0) AS quote_types, q.last_quote_at,
       coalesce(p.payments, 0) AS payments, coalesce(p.successful_payments, 0) AS successful_payments,
       coalesce(b.policies, 0) AS policies, b.last_purchase_at
FROM users u
LEFT JOIN quoted q ON q.user_id = u.user_id
LEFT JOIN paid p ON p.user_id = u.user_id
LEFT JOIN bought b ON b.user_id = u.user_id
