"""HTML forms of the access app: field formats only; the rules live in the services."""

from allauth.account.forms import LoginForm as AllauthLoginForm
from allauth.mfa.totp.forms import ActivateTOTPForm as AllauthActivateTOTPForm
from allauth.mfa.totp.internal import auth as totp_auth
from allauth.account.forms import SignupForm as AllauthSignupForm
from django import forms
from django.conf import settings
from django.contrib.auth.hashers import make_password
from django_countries import countries

from access.models import (
    ANSWER_MAX_CHARS, INTENDED_USE_MAX_CHARS, PUBLICATIONS_MAX_CHARS, REASON_MAX_CHARS, ApiToken, Application,
    Institution, ReasonTemplate,
)
from artifacts.models import Release


# Every id is a BigAutoField: a value outside its range names no row, and SQLite cannot even bind it.
ID_MIN, ID_MAX = 1, 2**63 - 1


class IdsField(forms.ModelMultipleChoiceField):
    """Rows chosen by id; an id out of the database's range is refused before any query."""

    def _check_values(self, value):
        if isinstance(value, (list, tuple)) and self.to_field_name is None:
            for pk in value:
                try:
                    number = int(str(pk))
                except ValueError:
                    continue  # not a number: Django's own check refuses it
                if not ID_MIN <= number <= ID_MAX:
                    raise forms.ValidationError(self.error_messages["invalid_pk_value"], code="invalid_pk_value",
                                                params={"pk": pk})
        return super()._check_values(value)


class SignupForm(AllauthSignupForm):
    """allauth's sign-up, doing the same work whether or not the address is already registered."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["email"].label = "E-mail address"
        self.fields["password2"].label = "Password again"

    def try_save(self, request):
        if self.account_already_exists:
            # A new account's password is hashed (Argon2, most of the answer's time): hash this one
            # too, so the answer's timing does not tell which addresses have an account.
            make_password(self.cleaned_data.get("password1"))
        return super().try_save(request)


class LoginForm(AllauthLoginForm):
    """allauth's sign-in in the portal's words."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["login"].label = "E-mail address"
        if "remember" in self.fields:
            self.fields["remember"].label = "Keep me signed in on this computer"


class ActivateTOTPForm(AllauthActivateTOTPForm):
    """allauth's activation, with one secret per session until it is activated (allauth makes a new one on
    every page load, so a reload between scanning and typing the code would break the set-up)."""

    def __init__(self, *args, **kwargs):
        self.user = kwargs.pop("user")
        forms.Form.__init__(self, *args, **kwargs)
        self.secret = totp_auth.get_totp_secret(regenerate=False)  # allauth clears it on activation


def add_service_errors(form: forms.Form, errors: dict[str, list[str]]) -> None:
    """Show a service's field errors on the form (on the form itself when it has no such field)."""
    for field, messages in errors.items():
        for message in messages:
            form.add_error(field if field in form.fields else None, message)


class LicenceSignatureMixin(forms.Form):
    accept_licence = forms.BooleanField(required=False, label="I have read and accept the licence")
    signature_name = forms.CharField(max_length=200, required=False, label="Signature: type your full legal name")


class ApplicationForm(LicenceSignatureMixin):
    releases = IdsField(queryset=Release.objects.none(), widget=forms.CheckboxSelectMultiple,
                                              label="Release(s) requested")
    legal_name = forms.CharField(max_length=200, label="Full legal name")
    institution_name = forms.CharField(max_length=300, label="Institution",
                                       widget=forms.TextInput(attrs={"list": "institutions", "autocomplete": "off"}))
    institution_ror_id = forms.CharField(max_length=100, required=False, label="ROR id (optional)",
                                         help_text="e.g. https://ror.org/052gg0110")
    role = forms.ChoiceField(choices=[("", "Choose…")] + Application.Role.choices)
    sector = forms.ChoiceField(choices=Institution.Sector.choices)
    country = forms.ChoiceField(choices=[("", "Choose…")] + list(countries), label="Country where you work")
    orcid = forms.CharField(max_length=40, required=False, label="ORCID iD (optional)",
                            help_text="e.g. 0000-0002-1825-0097")
    publications = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False,
                                   max_length=PUBLICATIONS_MAX_CHARS,
                                   label="Publications and URLs (optional)")
    intended_use = forms.CharField(widget=forms.Textarea(attrs={"rows": 6}), max_length=INTENDED_USE_MAX_CHARS,
                                   label="Intended research use")
    supervisor_name = forms.CharField(max_length=200, required=False, label="Supervisor / reference name",
                                      help_text="Required for students: we e-mail them to confirm your project.")
    supervisor_email = forms.EmailField(max_length=254, required=False, label="Supervisor / reference e-mail")

    field_order = ["releases", "legal_name", "institution_name", "institution_ror_id", "role", "sector", "country",
                   "orcid", "publications", "intended_use", "supervisor_name", "supervisor_email", "accept_licence",
                   "signature_name"]  # as the page shows them, so that the error summary reads in page order

    def __init__(self, *args, releases, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["releases"].queryset = releases
        self.fields["intended_use"].help_text = (
            f"{settings.ACCESS_INTENDED_USE_MIN_CHARS} to {INTENDED_USE_MAX_CHARS:,} characters: your research "
            f"question, what you will do with the weights, and how you will publish.")


class SignatureForm(LicenceSignatureMixin):
    pass


class RespondForm(forms.Form):
    response = forms.CharField(widget=forms.Textarea(attrs={"rows": 5}), max_length=ANSWER_MAX_CHARS,
                               label="Your answer")


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, label="Token name", help_text="e.g. the machine that uses it")
    days = forms.IntegerField(min_value=1, initial=90, label="Valid for (days)")
    scopes = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, label="What the token may do",
        help_text="Your applications and grants can be read and managed with any of your tokens.")

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["days"] = forms.IntegerField(min_value=1, max_value=settings.ACCESS_API_TOKEN_MAX_DAYS,
                                                 initial=90, label="Valid for (days)")
        self.fields["scopes"].choices = [(value, label) for value, label in ApiToken.Scope.choices
                                         if value != ApiToken.Scope.REVIEW or user.is_staff]


class DecisionForm(forms.Form):
    ACTIONS = [("approve", "Approve"), ("reject", "Reject"), ("request_info", "Request information")]
    action = forms.ChoiceField(choices=ACTIONS)
    template = forms.ModelChoiceField(queryset=ReasonTemplate.objects.all(), required=False,
                                      label="Reason template")
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}), required=False, max_length=REASON_MAX_CHARS,
                             label="Reason (shown to the applicant)")

    def full_reason(self) -> str:
        """The words the applicant gets: the reason box, which the page fills with the chosen template's
        text for the reviewer to edit; without the page's script, the template's text before the box's."""
        template, reason = self.cleaned_data.get("template"), self.cleaned_data.get("reason", "").strip()
        if template is None or template.text.strip() in reason:
            return reason
        return "\n\n".join(part for part in (template.text.strip(), reason) if part)


class BulkDecisionForm(DecisionForm):
    ACTIONS = [("approve", "Approve"), ("reject", "Reject")]
    action = forms.ChoiceField(choices=ACTIONS, error_messages={"required": "Choose approve or reject."})
    applications = IdsField(queryset=Application.objects.all(), error_messages={
        "required": "Select at least one application."})


class NoteForm(forms.Form):
    text = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=REASON_MAX_CHARS, label="Internal note")


class ReasonForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=REASON_MAX_CHARS,
                             label="Reason (shown to the researcher)")


class QueueFilterForm(forms.Form):
    """The review queue's filters (HTML page and API); unknown values are field errors."""

    release = forms.SlugField(required=False)
    status = forms.ChoiceField(required=False, choices=[("", "Waiting")] + [
        (value, label) for value, label in Application.Status.choices if value != "draft"] + [("decided", "Decided")])
    age = forms.ChoiceField(required=False, choices=[("", "Any"), ("overdue", "Older than the SLA"),
                                                     ("within_sla", "Within the SLA"), ("today", "Last 24 hours")])
    country = forms.ChoiceField(required=False, choices=[("", "All")] + list(countries))
    signal = forms.ChoiceField(required=False)
    assigned = forms.ChoiceField(required=False, choices=[("", "Anyone"), ("me", "Me"), ("none", "Nobody")])

    def __init__(self, *args, **kwargs):
        from access.services.vetting import SIGNAL_LABELS

        super().__init__(*args, **kwargs)
        self.fields["signal"].choices = [("", "Any")] + list(SIGNAL_LABELS.items())

    def filters(self) -> dict:
        """The cleaned filters, or no filtering when the form is invalid."""
        if not self.is_valid():
            return {name: "" for name in self.fields}
        return {name: self.cleaned_data.get(name) or "" for name in self.fields}
