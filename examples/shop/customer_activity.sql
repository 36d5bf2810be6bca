-- One row per customer who viewed a page: their browsing in the last week and their recent orders.
-- Both sources keep a hot window (7 and 30 days), so serving and a hot_window=true training set agree.
WITH views AS (
    SELECT customer_id, count(*) AS views, avg(seconds_on_page) AS mean_seconds_on_page,
           count(DISTINCT category) AS categories_viewed, max(viewed_at) AS last_view
    FROM page_views GROUP BY customer_id
), spend AS (
    SELECT customer_id, count(*) AS orders, sum(amount) AS spent, max(ordered_at) AS last_order,
           sum(CASE WHEN coupon_used THEN 1 ELSE 0 END) AS coupon_orders
    FROM orders GROUP BY customer_id
)
SELECT v.customer_id, v.views, v.mean_seconds_on_page, v.categories_viewed, v.last_view,
       coalesce(s.orders, 0) AS orders, coalesce(s.spent, 0.0) AS spent, s.last_order,
       coalesce(s.coupon_orders, 0) AS coupon_orders
FROM views v LEFT JOIN spend s ON s.customer_id = v.customer_id
