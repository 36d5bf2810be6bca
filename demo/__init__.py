"""The demo domain: an insurance quote → bind → pay → policy flow."""
