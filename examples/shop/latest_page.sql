-- The latest page each customer viewed within the page views' hot window (7 days), and when.
SELECT customer_id, page AS last_page, category AS last_category, viewed_at AS last_viewed_at
FROM (
    SELECT customer_id, page, category, viewed_at,
           row_number() OVER (PARTITION BY customer_id ORDER BY viewed_at DESC, page DESC) AS recency
    FROM page_views
) AS ranked
WHERE recency = 1
