-- One row per bound quote: the user, their quote, its payment and the policy it became.
SELECT u.user_id,
       u.creation_date  AS user_created,
       q.quote_type,
       q.quote_device,
       q.is_binded,
       q.is_paid,
       q.binding_date - q.creation_date AS seconds_to_bind,
       t.successful     AS payment_successful,
       t.card_type,
       p.policy_type
FROM users u
JOIN quotes q            ON q.user_id = u.user_id
LEFT JOIN transactions t ON t.ref_id = q.quote_id
LEFT JOIN policies p     ON p.quote_id = q.quote_id
